"""The batch APIs against the per-record ones, in one run (issue 19; docs/benchmarks.md).

On a fresh local cluster (1 broker, acks=all, fsync before ack as configured by default):

- W1: one producer sends COUNT x 100 B over 8 keys to an 8-partition topic, with
  ``send`` per record (futures kept, then ``flush``) and with one ``send_many`` call
  (the value and key lists built before the clock starts);
- W2-style: CONSUMERS processes read a 16-partition topic of COUNT records (filled
  untimed), each assigned its share of the partitions, with ``poll`` and with
  ``poll_batch`` (``max_records`` MAX_RECORDS for both), until each has read its share.

Rounds alternate the two forms; medians of RUNS, the load average printed with them.
``--profile DIR`` writes a cProfile of one send/send_many run and one poll/poll_batch
consumer (one process reading every partition) to DIR.

    nice -n 10 .venv/bin/python scripts/bench_batch_api.py [--count N] [--runs 3]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import conveyor
from conveyor.bench.local import LocalCluster

VALUE = os.urandom(100)
KEYS = [f"key-{n}".encode() for n in range(8)]
MAX_RECORDS = 10_000
FETCH_MAX_BYTES = 4 * 1024 * 1024


def make_topic(url: str, partitions: int) -> str:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    with conveyor.Admin(url) as admin:
        admin.create_topic(name, partitions=partitions)
    return name


def produce_send(url: str, topic: str, count: int) -> float:
    with conveyor.Producer(url) as producer:
        producer.send(topic, VALUE, KEYS[0]).result(30)  # metadata and connections first
        send = producer.send
        started = time.perf_counter()
        futures = [send(topic, VALUE, KEYS[i & 7]) for i in range(count)]
        producer.flush()
        elapsed = time.perf_counter() - started
    failed = sum(1 for f in futures if f.exception(0) is not None)
    assert not failed, f"{failed} records failed"
    return count / elapsed


def produce_send_many(url: str, topic: str, count: int) -> float:
    values = [VALUE] * count
    keys = [KEYS[i & 7] for i in range(count)]
    with conveyor.Producer(url) as producer:
        producer.send(topic, VALUE, KEYS[0]).result(30)
        started = time.perf_counter()
        result = producer.send_many(topic, values, keys).result(120)
        elapsed = time.perf_counter() - started
    assert result.written_count == count
    return count / elapsed


def consume(  # noqa: PLR0917 -- a child process's arguments
    url: str, topic: str, partitions: list[int], batch: bool, go: Any, out: Any
) -> None:
    consumer = conveyor.Consumer(url, fetch_max_bytes=FETCH_MAX_BYTES, enable_auto_commit=False)
    try:
        consumer.assign([(topic, p) for p in partitions])
        wanted = sum(consumer.end_offsets([(topic, p) for p in partitions]).values())
        go.wait()
        started = time.perf_counter()
        got = 0
        while got < wanted:
            if batch:
                got += len(consumer.poll_batch(timeout=1.0, max_records=MAX_RECORDS))
            else:
                got += len(consumer.poll(timeout=1.0, max_records=MAX_RECORDS))
        out.put((started, time.perf_counter(), got))
    finally:
        consumer.close()


def consume_rate(url: str, topic: str, consumers: int, batch: bool) -> float:
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    shares = [list(range(16))[i::consumers] for i in range(consumers)]
    processes = [
        context.Process(target=consume, args=(url, topic, share, batch, go, out))
        for share in shares
    ]
    for process in processes:
        process.start()
    time.sleep(3)  # every consumer assigned and fetching metadata
    go.set()
    reports = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(30)
    first = min(r[0] for r in reports)
    last = max(r[1] for r in reports)
    return sum(r[2] for r in reports) / (last - first)


def profile_consumer(url: str, topic: str, count: int, batch: bool, path: Path) -> None:
    consumer = conveyor.Consumer(url, fetch_max_bytes=FETCH_MAX_BYTES, enable_auto_commit=False)
    consumer.assign([(topic, p) for p in range(16)])
    profiler = cProfile.Profile()
    got = 0
    profiler.enable()
    while got < count:
        if batch:
            got += len(consumer.poll_batch(timeout=1.0, max_records=MAX_RECORDS))
        else:
            got += len(consumer.poll(timeout=1.0, max_records=MAX_RECORDS))
    profiler.disable()
    consumer.close()
    profiler.dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {k: [] for k in ("send", "send_many", "poll", "poll_batch")}
    with LocalCluster(1) as cluster:
        url = cluster.url
        for run in range(args.runs):
            order = ("send", "send_many") if run % 2 == 0 else ("send_many", "send")
            for form in order:
                topic = make_topic(url, 8)
                produce = produce_send if form == "send" else produce_send_many
                rates[form].append(produce(url, topic, args.count))
                print(f"run {run}: W1 {form}: {rates[form][-1]:,.0f} msg/s", flush=True)
            topic = make_topic(url, 16)
            produce_send_many(url, topic, args.count)
            for form in ("poll", "poll_batch") if run % 2 == 0 else ("poll_batch", "poll"):
                rate = consume_rate(url, topic, args.consumers, form == "poll_batch")
                rates[form].append(rate)
                print(f"run {run}: W2-style {form}: {rate:,.0f} msg/s", flush=True)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name, produce in (("send", produce_send), ("send_many", produce_send_many)):
                profiler = cProfile.Profile()
                profiler.runcall(produce, url, make_topic(url, 8), args.count)
                profiler.dump_stats(args.profile / f"{name}.prof")
            topic = make_topic(url, 16)
            produce_send_many(url, topic, args.count)
            for name in ("poll", "poll_batch"):
                path = args.profile / f"{name}.prof"
                profile_consumer(url, topic, args.count, name == "poll_batch", path)
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    for form, values in rates.items():
        runs = " / ".join(f"{v:,.0f}" for v in values)
        print(f"{form:>10}: median {statistics.median(values):>10,.0f} msg/s  ({runs})")
    median = {form: statistics.median(values) for form, values in rates.items()}
    print(
        f"send_many / send: {median['send_many'] / median['send']:.2f}x; "
        f"poll_batch / poll: {median['poll_batch'] / median['poll']:.2f}x"
    )


if __name__ == "__main__":
    main()
