"""Which of librdkafka's own tests run against Conveyor, and why the others don't.

Every test number of librdkafka 2.12.0's tests/ in 0000-0100 is listed once (a few twice,
split by ``SUBTESTS``, the runner's sub-test name filter), and beyond 0100 the consumer
group tests that need a broker, with the reason when it is not run. Tests that join a
consumer group run twice: with the classic protocol (librdkafka's default) and with
KIP-848's ``group.protocol=consumer`` (``protocol="consumer"``: the runner's
``TEST_CONSUMER_GROUP_PROTOCOL``, as librdkafka's own CI runs them; the tests skip what
their protocol does not do). The reasons fall in a few classes:

* ``LOCAL``: the test needs no broker (``TEST_F_LOCAL``: config parsing, the mock
  cluster, unit tests); it tests librdkafka alone, so running it says nothing about
  Conveyor.
* anything else names the missing feature.

``quick=True`` marks the short subset that ``make test`` runs (pytest
tests/kafka/test_librdkafka.py); ``make test-kafka`` runs every entry without a skip reason.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "needs no broker (TEST_F_LOCAL): tests librdkafka alone"
KNOWN_ISSUE = "marked TEST_F_KNOWN_ISSUE by librdkafka itself (not run by its own CI)"
KAFKA_TOOLS = "runs Apache Kafka's own scripts (kafka-topics.sh, JMX) from KAFKA_PATH"
RECOMPRESSION = "sets compression.type (broker-side recompression, which Conveyor does not do)"


@dataclass(frozen=True)
class Entry:
    test: str  # the 4-digit number, what TESTS= matches
    skip: str = ""  # why it is not run; empty: it runs
    subtests: str = ""  # SUBTESTS= filter: only sub-tests whose name contains it
    quick: bool = False  # in the short subset of `make test`
    protocol: str = ""  # "consumer": TEST_CONSUMER_GROUP_PROTOCOL=consumer (KIP-848)
    timeout_s: float = 600.0  # the runner process is killed after this long

    @property
    def key(self) -> str:
        key = f"{self.test}/{self.subtests}" if self.subtests else self.test
        return f"{key}@{self.protocol}" if self.protocol else key


SELECTION: tuple[Entry, ...] = (
    Entry("0000", LOCAL),
    Entry("0001", quick=True),
    Entry("0002", quick=True),
    Entry("0003"),
    Entry("0004", LOCAL),
    Entry("0005", quick=True),
    Entry("0006", LOCAL),
    Entry("0007", quick=True),
    Entry("0008"),
    Entry("0009", LOCAL),
    Entry("0011", subtests="test_message_partitioner_wo_per_message_flag"),
    Entry("0011", subtests="test_single_partition"),
    Entry("0011", subtests="test_partitioner"),
    Entry("0011", subtests="test_per_message_partition_flag"),
    Entry("0011", subtests="test_message_single_partition_record_fail"),
    Entry("0012", quick=True),
    Entry("0013"),
    Entry("0014"),
    Entry("0015"),
    Entry("0016"),
    Entry("0017", quick=True),
    Entry("0018"),
    Entry("0019"),
    Entry("0020"),
    Entry("0021"),
    Entry("0022"),
    Entry("0025", LOCAL),
    Entry("0026"),
    Entry("0028", KNOWN_ISSUE),
    Entry("0029"),
    Entry("0030"),
    Entry("0031"),
    Entry("0033"),
    Entry("0034"),
    Entry("0035", quick=True),
    Entry("0036"),
    Entry("0037", LOCAL),
    Entry("0038"),
    Entry("0039"),
    Entry("0040"),
    Entry("0041"),
    Entry("0042"),
    Entry("0043", LOCAL),
    Entry("0044"),
    Entry("0045"),
    Entry("0046", LOCAL),
    Entry("0047", KNOWN_ISSUE),
    Entry("0048"),
    Entry("0049"),
    Entry("0050"),
    Entry("0051"),
    Entry("0052", KAFKA_TOOLS + "; also message.timestamp.type=LogAppendTime"),
    Entry("0053"),
    Entry("0054"),
    Entry("0055"),
    Entry("0056"),
    Entry("0057"),
    Entry("0058", LOCAL),
    Entry("0059"),
    Entry("0060"),
    Entry("0061"),
    Entry("0062", LOCAL),
    Entry("0063"),
    Entry("0064"),
    Entry("0065"),
    Entry("0066", LOCAL),
    Entry("0067"),
    Entry("0068"),
    Entry("0069"),
    Entry("0070"),
    Entry("0072", LOCAL),
    Entry("0073"),
    Entry("0074", LOCAL),
    Entry("0075"),
    Entry("0076"),
    Entry("0077", KAFKA_TOOLS + ": creates its compacted topic with kafka-topics.sh"),
    Entry("0078", LOCAL),
    Entry("0079", LOCAL),
    Entry("0080", LOCAL),
    Entry("0081", RECOMPRESSION + " (lz4)", subtests="do_test_CreateTopics"),
    Entry("0081", subtests="do_test_DeleteTopics"),
    Entry("0081", subtests="do_test_CreatePartitions"),
    Entry("0081", RECOMPRESSION, subtests="do_test_AlterConfigs"),
    Entry("0081", RECOMPRESSION, subtests="do_test_IncrementalAlterConfigs"),
    Entry("0081", subtests="do_test_DescribeConfigs:"),
    Entry("0081", subtests="do_test_DeleteRecords"),
    Entry("0081", subtests="do_test_DescribeTopics"),
    Entry("0081", subtests="do_test_DescribeCluster"),
    Entry("0081", subtests="do_test_ListOffsets"),
    Entry("0081", subtests="do_test_DeleteGroups"),
    Entry("0081", subtests="do_test_ListConsumerGroups"),
    Entry("0081", subtests="do_test_DescribeConsumerGroups"),
    Entry("0081", subtests="do_test_DeleteConsumerGroupOffsets"),
    Entry("0081", subtests="do_test_AlterConsumerGroupOffsets"),
    Entry("0081", subtests="do_test_ListConsumerGroupOffsets"),
    Entry("0082"),
    Entry("0083"),
    Entry("0084"),
    Entry("0085"),
    Entry("0086"),
    Entry("0088"),
    Entry("0089"),
    Entry("0090"),
    Entry("0091"),
    Entry("0092", "needs MessageSet v0/v1 (Conveyor stores RecordBatch v2 only, as Kafka 4)"),
    Entry("0093"),
    Entry("0094"),
    Entry("0095", LOCAL),
    Entry("0097", "needs an SSL listener with librdkafka's own test certificates"),
    Entry("0098"),
    Entry("0099"),
    Entry("0100", LOCAL),
    # beyond 0100: the consumer-group and transaction tests that need a broker
    Entry("0102"),
    Entry("0107", "runs in librdkafka's noautocreate scenario (a cluster without auto-creation)"),
    Entry("0109", KAFKA_TOOLS + ": checks auto-creation with kafka-topics.sh"),
    Entry("0112"),
    Entry("0113", timeout_s=1800.0),  # 36 sub-tests, each a few rebalances
    Entry("0118"),
    Entry("0122"),
    Entry("0127"),
    Entry("0103"),
    Entry("0129"),
    Entry("0130"),
    Entry("0132"),
    Entry("0137"),
    Entry("0140"),
    Entry("0153"),
)

# The tests that join a consumer group: each runs again with KIP-848's protocol.
GROUP_TESTS = frozenset(
    {
        "0014", "0018", "0019", "0020", "0022", "0026", "0029", "0030", "0033", "0034",
        "0040", "0042", "0045", "0049", "0050", "0056", "0060", "0064", "0069", "0076",
        "0082", "0083", "0084", "0089", "0090", "0091", "0093", "0094", "0099", "0102",
        "0107", "0109", "0113", "0118", "0122", "0127", "0130", "0132", "0137", "0140",
        "0153",
    }
)  # fmt: skip
SELECTION = SELECTION + tuple(
    Entry(e.test, e.skip, e.subtests, protocol="consumer", timeout_s=e.timeout_s)
    for e in SELECTION
    if e.test in GROUP_TESTS and not e.skip
)


def runnable(quick_only: bool = False) -> list[Entry]:
    return [e for e in SELECTION if not e.skip and (e.quick or not quick_only)]
