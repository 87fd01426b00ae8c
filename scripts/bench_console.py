"""Console render times in a real browser (docs/benchmarks.md, "Web console").

Starts a coordinator and one broker (plain HTTP, auth off) on free ports, creates 1,000
topics (1 partition each) and 1,000 consumer groups (a committed offset each), produces
50 messages, then loads in headless chromium, 5 times each: the topic list (all 1,000
rows), the group list (all 1,000 rows) and the message browser's page of 50. A load is
timed from navigation start to the page's load event (the server's work, the transfer
and the browser's parsing and layout). Prints the medians. Targets: < 1 s, < 1 s, < 300 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conveyor.client.admin import Admin  # noqa: E402
from conveyor.protocol.messages import PartitionOffset, ResetOffsetsRequest  # noqa: E402
from conveyor.transport.client import SyncHTTP  # noqa: E402
from tests.console.harness import launch, open_tab  # noqa: E402
from tests.integration.cluster import Cluster, wait_for  # noqa: E402

TOPICS = GROUPS = 1_000
RUNS = 5


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(
            Path(root), broker_count=1, coordinator_args=["--default-partitions", "1"]
        ).start()
        try:
            run(cluster)
        finally:
            cluster.stop()


def run(cluster: Cluster) -> None:
    admin = Admin(cluster.url)
    started = time.monotonic()
    for i in range(TOPICS):
        admin.create_topic(f"bench-{i:04d}", partitions=1, replication_factor=1)
    http = SyncHTTP()
    for i in range(GROUPS):
        body = ResetOffsetsRequest(
            offsets=[PartitionOffset(topic=f"bench-{i:04d}", partition=0, offset=0)]
        )
        http.call("POST", f"{cluster.url}/v1/groups/group-{i:04d}/offsets/reset", dict, body=body)
    broker = next(iter(cluster.brokers.values())).url
    wait_for(
        lambda: b"bench-0999" in http.request("GET", f"{broker}/v1/partitions").data,
        120,
        "partitions",
    )
    records = [
        {"key": f"k{i}", "value": '{"n": %d, "text": "%s"}' % (i, "x" * 200)} for i in range(50)
    ]
    http.call("POST", f"{broker}/v1/topics/bench-0000/records", dict, body={"records": records})
    print(f"setup {time.monotonic() - started:.1f} s", flush=True)
    pages = {
        "topic list (1,000 topics)": (
            f"{cluster.url}/console/topics",
            "#topics-table tbody tr",
            TOPICS,
        ),
        "group list (1,000 groups)": (
            f"{cluster.url}/console/groups",
            "#groups-table tbody tr",
            GROUPS,
        ),
        "message browser (50 messages)": (
            f"{cluster.url}/console/topics/bench-0000/messages?partition=0&start=beginning",
            "#messages-table tr.message",
            50,
        ),
    }
    for browser in launch():
        tab = open_tab(browser)
        tab.page.goto(f"{cluster.url}/console/")  # the session cookie, warm assets
        for name, (url, rows, expected) in pages.items():
            times = []
            for _ in range(RUNS):
                tab.page.goto(url)
                assert tab.page.locator(rows).count() == expected, name
                times.append(
                    tab.page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                )
            print(
                f"{name}: median {statistics.median(times):.0f} ms (runs: "
                + ", ".join(f"{t:.0f}" for t in times)
                + ")",
                flush=True,
            )
        tab.assert_no_errors()
        tab.close()


if __name__ == "__main__":
    main()
