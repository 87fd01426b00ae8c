// A kafkajs consumer-group member (run by tests/kafka/test_group_clients.py), printing
// the same JSON lines as tests/kafka/kafka_member.py: one per message processed, a
// "committed" line after each synchronous commit of a batch (so what a SIGKILLed member
// processed after its last commit is its uncommitted tail), "assigned" on each group
// join, "closed" at the end. SIGTERM: commit, leave the group, exit 0.
"use strict";
const { Kafka, logLevel } = require("kafkajs");

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

async function main() {
  const [bootstrap, topic, group] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: "member-kafkajs",
    brokers: bootstrap.split(","),
    logLevel: logLevel.ERROR,
  });
  const consumer = kafka.consumer({
    groupId: group,
    sessionTimeout: 3000,
    heartbeatInterval: 300,
    rebalanceTimeout: 10000,
    // kafkajs heartbeats between fetches only: a fetch must not wait a session long
    maxWaitTimeInMs: 250,
  });
  let processed = 0;
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    const assigned = [];
    for (const [t, partitions] of Object.entries(event.payload.memberAssignment)) {
      for (const p of partitions) assigned.push([t, p]);
    }
    emit({ assigned: assigned.sort() });
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let stopping = false;
  process.on("SIGTERM", async () => {
    if (stopping) return;
    stopping = true;
    await consumer.disconnect();
    emit({ closed: processed });
    process.exit(0);
  });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary }) => {
      if (stopping) return;
      let last = null;
      for (const m of batch.messages) {
        emit({
          k: m.key === null ? null : m.key.toString(),
          v: m.value === null ? null : m.value.toString(),
          p: batch.partition,
          o: Number(m.offset),
          t: Date.now() / 1000,
        });
        processed += 1;
        last = m.offset;
      }
      if (last === null) return;
      resolveOffset(last);
      try {
        await consumer.commitOffsets([
          { topic: batch.topic, partition: batch.partition, offset: String(Number(last) + 1) },
        ]);
        emit({ committed: processed });
      } catch (error) {
        emit({ commit_failed: String(error), t: Date.now() / 1000 });
      }
    },
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
