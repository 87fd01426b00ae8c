// kafkajs against Conveyor's Kafka listener (run by tests/kafka/test_kafkajs.py):
// creates the topic with the admin client, produces COUNT keyed records with headers
// (acks=-1, kafkajs's default Java-compatible murmur2 partitioner), then prints one JSON
// line: what the producer was told and the topic's offsets as the admin client sees them.
// kafkajs consumes in consumer groups only: kafkajs_member.js (test_group_clients.py).
"use strict";
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, count] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: "conveyor-kafkajs-check",
    brokers: bootstrap.split(","),
    logLevel: logLevel.ERROR,
  });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < Number(count); i++) {
    messages.push({
      key: `key-${i % 7}`,
      value: `js-${i}`,
      headers: { n: String(i) },
      timestamp: String(1700000000000 + i),
    });
  }
  const acks = await producer.send({ topic, acks: -1, messages });
  const offsets = await admin.fetchTopicOffsets(topic);
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  await producer.disconnect();
  await admin.disconnect();
  console.log(JSON.stringify({ created, acks, offsets, metadata }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
