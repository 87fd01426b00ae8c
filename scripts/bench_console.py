"""Console render times in a real browser (docs/benchmarks.md, "Web console").

Starts a coordinator and one broker (plain HTTP, auth off) on free ports, creates 1,000
topics (1 partition each) and 1,000 consumer groups (a committed offset each), produces
50 messages, then loads in headless chromium, 5 times each: the topic list (all 1,000
rows), the group list (all 1,000 rows) and the message browser's page of 50. A load is
timed from navigation start to the page's load event (the server's work, the transfer
and the browser's parsing and layout). Prints the medians. Targets: < 1 s, < 1 s, < 300 ms.

``--baseline DIR`` also starts the same cluster from another source tree (``DIR/src``,
e.g. ``git archive <commit> | tar -x -C DIR``) and loads each page from the two
alternately (baseline, this tree, baseline, ...), so both see the same machine load;
it prints both medians and their ratio. Run it with ``nice -n 10`` on a shared machine
and quote the load it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.console.harness import Tab, launch, open_tab
from tests.integration.cluster import Cluster, wait_for

from conveyor.client.admin import Admin
from conveyor.protocol.messages import PartitionOffset, ResetOffsetsRequest
from conveyor.transport.client import SyncHTTP

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession

TOPICS = GROUPS = 1_000
RUNS = 5
PAGES = {  # name: (path, rows selector, rows expected, target ms)
    "topic list (1,000 topics)": ("/console/topics", "#topics-table tbody tr", TOPICS, 1000),
    "group list (1,000 groups)": ("/console/groups", "#groups-table tbody tr", GROUPS, 1000),
    "message browser (50 messages)": (
        "/console/topics/bench-0000/messages?partition=0&start=beginning",
        "#messages-table tr.message",
        50,
        300,
    ),
}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@contextmanager
def cluster_from(root: Path, source: Path | None) -> Iterator[Cluster]:
    """A cluster whose processes import ``source/src`` (None: this tree)."""
    saved = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = str(source / "src")
    try:
        root.mkdir(parents=True)
        cluster = Cluster(root, broker_count=1, coordinator_args=["--default-partitions", "1"])
        cluster.start()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        fill(cluster)
        yield cluster
    finally:
        cluster.stop()


def fill(cluster: Cluster) -> None:
    admin = Admin(cluster.url)
    started = time.monotonic()
    for i in range(TOPICS):
        wait_for(lambda: any(b.alive for b in admin.cluster().brokers), 60, "a live broker")
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
        {"key": f"k{i}", "value": json.dumps({"n": i, "text": "x" * 200})} for i in range(50)
    ]
    http.call("POST", f"{broker}/v1/topics/bench-0000/records", dict, body={"records": records})
    print(f"setup of {cluster.url}: {time.monotonic() - started:.1f} s", flush=True)


@dataclass
class Sample:
    """One page load. ``wall_ms``: navigation start to the load event. ``server_ms``: the
    request sent to the last byte of the answer. ``services_cpu_ms``: CPU time the
    coordinator and broker processes used meanwhile (their /proc counters);
    ``browser_cpu_ms``: CPU time of chromium's processes (SystemInfo.getProcessInfo).
    CPU times hardly change with the machine's load, wall times do: their sum is about
    what the page takes on a quiet machine (the steps run one after the other)."""

    wall_ms: float
    server_ms: float
    services_cpu_ms: float
    browser_cpu_ms: float


def services_cpu_ms(cluster: Cluster) -> float:
    """User + system CPU time so far of the cluster's processes."""
    total = 0
    for service in [cluster.coordinator, *cluster.brokers.values()]:
        if service is None or service.process is None:
            continue
        fields = Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def browser_cpu_ms(cdp: CDPSession) -> float:
    """CPU time so far of every chromium process (browser, renderers, GPU, utility)."""
    processes = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    return 1000 * sum(float(p["cpuTime"]) for p in processes)


def timed(
    tab: Tab, cdp: CDPSession, cluster: Cluster, path: str, *, rows: str, count: int
) -> Sample:
    services_before, browser_before = services_cpu_ms(cluster), browser_cpu_ms(cdp)
    tab.page.goto(cluster.url + path)
    found = tab.page.locator(rows).count()
    if found != count:
        raise AssertionError(f"{path}: {found} rows, not {count}: {tab.page.inner_text('main')}")
    timing = tab.page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
    return Sample(
        wall_ms=float(timing["loadEventEnd"]),
        server_ms=float(timing["responseEnd"] - timing["requestStart"]),
        services_cpu_ms=services_cpu_ms(cluster) - services_before,
        browser_cpu_ms=browser_cpu_ms(cdp) - browser_before,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="source tree to compare with")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--only", default="", help="the pages whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, ExitStack() as stack:
        bases = {"this tree": stack.enter_context(cluster_from(Path(root) / "new", None))}
        if args.baseline is not None:
            old = stack.enter_context(cluster_from(Path(root) / "old", args.baseline))
            bases = {"baseline": old, **bases}
        print(f"load average before: {load()}", flush=True)
        for browser in launch():
            cdp = browser.new_browser_cdp_session()
            tabs = {name: open_tab(browser) for name in bases}
            for name, tab in tabs.items():
                tab.page.goto(f"{bases[name].url}/console/")  # session cookie, warm assets
            for page, (path, rows, expected, target) in PAGES.items():
                if args.only not in page:
                    continue
                times: dict[str, list[Sample]] = {name: [] for name in bases}
                for _ in range(args.runs):
                    for name, cluster in bases.items():  # alternately: the same load
                        times[name].append(
                            timed(tabs[name], cdp, cluster, path, rows=rows, count=expected)
                        )
                report(page, target, times)
            for tab in tabs.values():
                tab.assert_no_errors()
                tab.close()
        print(f"load average after: {load()}", flush=True)


def report(page: str, target: int, times: dict[str, list[Sample]]) -> None:
    medians = {
        name: statistics.median(s.wall_ms for s in samples) for name, samples in times.items()
    }
    for name, samples in times.items():
        runs = ", ".join(f"{s.wall_ms:.0f}" for s in samples)
        server = statistics.median(s.server_ms for s in samples)
        cpu = statistics.median(s.services_cpu_ms for s in samples)
        task = statistics.median(s.browser_cpu_ms for s in samples)
        print(
            f"{page} [{name}]: median {medians[name]:.0f} ms (target < {target}; runs: {runs});"
            f" server answer {server:.0f} ms; CPU: services {cpu:.0f} ms + browser {task:.0f} ms"
            f" = {cpu + task:.0f} ms",
            flush=True,
        )
    if "baseline" in medians and medians["baseline"] > 0:
        print(f"{page}: this tree / baseline = {medians['this tree'] / medians['baseline']:.2f}")


if __name__ == "__main__":
    main()
