"""W1 ``send`` per record: wall-clock rate and the producer process's CPU per record, per
thread, for one or more source trees against the same broker (issue 19; docs/benchmarks.md).

A fresh local cluster (1 broker, acks=all, fsync before ack: the default). Each run is a
child process, with ``PYTHONPATH`` set to one tree's ``src``, that sends COUNT x 100 B
over 8 keys to a new 8-partition topic with ``Producer.send`` per record (futures kept),
then ``flush``es. It reports msg/s and, from /proc, the CPU microseconds per record of
each of its threads (the application thread's ``send`` loop, the I/O thread's batches,
requests and answers). Trees alternate within each round, so each sees the same load;
medians of RUNS, the load average printed with them.

    nice -n 10 .venv/bin/python scripts/bench_send_cpu.py --tree new=src \\
        --tree old=/path/to/old/src [--count 1000000] [--runs 3] [--py-spy DIR]

``--py-spy DIR`` records each tree's last run with py-spy (threads apart) into
``DIR/<tree>.txt`` (collapsed stacks). ``--gc-off``: the garbage collector disabled in the
runs, to see what it costs (with a million futures alive, most of the cost is its full
collections). ``--no-broker``: no cluster; each run feeds the accumulator as ``send`` does
(``msg/s`` is then records per CPU second).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

VALUE = os.urandom(100)
KEYS = [f"key-{n}".encode() for n in range(8)]
_TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU microseconds so far per thread of this process, by thread name (/proc)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) * _TICK_US
    return out


class _BatchCount:
    """Metrics hooks counting produce requests (one call per batch)."""

    def __init__(self) -> None:
        self.batches = 0

    def batch_sent(self, topic: str, records: int, size_bytes: int, seconds: float) -> None:
        self.batches += 1

    def batch_retried(self, topic: str, error_code: str) -> None:
        pass

    def batch_failed(self, topic: str, records: int, error_code: str) -> None:
        pass

    def records_fetched(self, topic: str, records: int, size_bytes: int) -> None:
        pass


class _GcTime:
    """Wall-clock seconds in the garbage collector per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.runs[info["generation"]] += 1


def accumulator_child(count: int, gc_off: bool) -> None:
    """``--no-broker``: the accumulator fed as ``send`` feeds it (key partitioning, the
    compiled codec's append, a future per record kept), batches never sent."""
    import threading

    from conveyor.client import futures
    from conveyor.client.accumulator import Accumulator
    from conveyor.client.recordcodec import configured_codec
    from conveyor.protocol.records import Codec

    accumulator: Accumulator[Any, Any] = Accumulator(
        batch_size_bytes=512 * 1024,
        linger_ms=5,
        buffer_memory_bytes=1 << 31,
        delivery_timeout_ms=120_000,
        codec=Codec.NONE,
        lock=threading.Lock(),
        new_completion=futures.BatchCompletion,
        new_future=getattr(futures, "record_future", futures.RecordFuture),  # older trees
        wake_sender=lambda: None,
        on_space=lambda: None,
        new_builder=configured_codec().new_builder,
    )
    append, now_ms = accumulator.append, time.time_ns() // 1_000_000
    gc.collect()
    if gc_off:
        gc.disable()
    cpu_before = time.process_time()
    kept = [append("t", KEYS[i & 7], VALUE, (), None, 8, now_ms) for i in range(count)]
    cpu = time.process_time() - cpu_before
    print(json.dumps({"rate": len(kept) / cpu, "cpu_us": cpu * 1e6 / count}))


def child(url: str, topic: str, count: int, gc_off: bool) -> None:
    if url == "-":
        accumulator_child(count, gc_off)
        return
    import conveyor
    from conveyor.client import metrics

    batches = _BatchCount()
    gc_time = _GcTime()

    with conveyor.Producer(url) as producer:
        producer.send(topic, VALUE, KEYS[0]).result(30)  # metadata and connections first
        send = producer.send
        metrics.add_hooks(batches)
        if gc_off:
            gc.disable()
        gc.callbacks.append(gc_time)
        before = _thread_cpu()
        cpu_before = time.process_time()
        started = time.perf_counter()
        futures = [send(topic, VALUE, KEYS[i & 7]) for i in range(count)]
        sent = time.perf_counter()
        producer.flush()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        after = _thread_cpu()
        gc.callbacks.remove(gc_time)
    failed = sum(1 for f in futures if f.exception(0) is not None)
    threads = {name: (after[name] - before.get(name, 0.0)) / count for name in after}
    print(
        json.dumps(
            {
                "rate": count / elapsed,
                "send_s": sent - started,
                "cpu_us": cpu * 1e6 / count,
                "threads_us": {k: round(v, 3) for k, v in threads.items() if v > 0.005},
                "failed": failed,
                "batches": batches.batches,
                "gc_us": [round(s * 1e6 / count, 3) for s in gc_time.seconds],
                "gc_runs": gc_time.runs,
            }
        )
    )


def _make_topic(url: str) -> str:
    import conveyor

    name = f"w1-{uuid.uuid4().hex[:8]}"
    with conveyor.Admin(url) as admin:
        admin.create_topic(name, partitions=8)
    return name


def _run(tree: Path, url: str, count: int, spy: Path | None, gc_off: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    topic = "-" if url == "-" else _make_topic(url)
    argv = [sys.executable, __file__, "--child", url, topic, str(count)]
    argv.append("gc-off" if gc_off else "gc-on")
    if spy is not None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spy_argv = [py_spy, "record", "--threads", "--native", "-r", "250", "-f", "raw"]
        argv = [*spy_argv, "-o", str(spy), "--", *argv]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result from the run: {done.stdout}{done.stderr}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument(
        "--gc-off", action="store_true", help="the garbage collector off while sending"
    )
    parser.add_argument(
        "--no-broker", action="store_true", help="only the accumulator, in one thread"
    )
    args = parser.parse_args()
    trees = {name: Path(src).resolve() for name, src in (t.split("=", 1) for t in args.tree)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    from conveyor.bench.local import LocalCluster

    with contextlib.nullcontext() if args.no_broker else LocalCluster(1) as cluster:
        url = "-" if cluster is None else cluster.url
        for run in range(args.runs):
            names = list(trees) if run % 2 == 0 else list(reversed(trees))
            for name in names:
                spy = None
                if args.py_spy is not None and run == args.runs - 1:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    spy = args.py_spy / f"{name}.txt"
                result = _run(trees[name], url, args.count, spy, args.gc_off)
                results[name].append(result)
                print(f"run {run} {name}: {json.dumps(result)}", flush=True)
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        print(f"{name:>8}: median {rate:>10,.0f} msg/s, {cpu:.2f} CPU us/record", end="")
        print("  (" + " / ".join(f"{r['rate']:,.0f}" for r in runs) + ")")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "gc-off")
    else:
        main()
