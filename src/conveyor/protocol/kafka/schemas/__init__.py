"""Kafka's JSON message schemas for the APIs kafka-python 3.0 lacks (KIP-848's
ConsumerGroupHeartbeat and ConsumerGroupDescribe), copied unchanged from Apache Kafka
(``clients/src/main/resources/common/message/``, Apache-2.0, as their headers say) and
loaded by kafka-python's own schema machinery (``protocol/kafka/kip848.py``)."""
