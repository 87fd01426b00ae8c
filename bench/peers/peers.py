# ruff: noqa: PLR0917 -- consumer entry points take (index, counter, go, ready, count, port)
"""The benchmark's workloads against Conveyor's peers: Redis Streams, NATS JetStream and
RabbitMQ (quorum and classic durable queues), on this machine, with their Python clients.

Usage: python bench/peers/peers.py [--systems redis,nats,rabbitmq-quorum,rabbitmq-classic]
       [--count 200000] [--runs 3] [--e2e-seconds 30] [--out results.jsonl]

Each system is installed when missing (apt-get, pip), started on its own 127.0.0.1 port
with its data under a temporary directory, and stopped by PID. Workloads (docs/benchmarks.md):
  W1 produce --count messages of 100 bytes over 8 keys, durable, every one acknowledged
  W2 consume them with 4 competing consumers (processes), every message acknowledged
  W3 2,000 sequential sends, each waiting for its acknowledgement: latency percentiles
  W4 end-to-end latency at a steady 5,000 msg/s for --e2e-seconds
Each client is used the fastest honest way we know: Redis XADD pipelined 1,000 at a time;
NATS publish_async with a window of 1,000 pending acks; RabbitMQ publisher confirms with
a window of 1,000 unconfirmed messages (aio-pika is slower than pika's blocking client in
our tests, so pika with delivery confirmations in batches).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MESSAGE_BYTES = 100
KEYS = 8
CONSUMERS = 4
W3_COUNT = 2_000
W4_RATE = 5_000
WINDOW = 1_000
APT = {"redis": "redis-server", "nats": "nats-server", "rabbitmq": "rabbitmq-server"}
PIP = {"redis": ("redis", "hiredis"), "nats": ("nats-py",), "rabbitmq": ("pika",)}


# --- installing, starting and stopping --------------------------------------------------------


def ensure_installed(system: str) -> None:
    family = system.split("-", maxsplit=1)[0]
    binary = {"redis": "redis-server", "nats": "nats-server", "rabbitmq": "rabbitmq-server"}
    if shutil.which(binary[family]) is None and not Path(f"/usr/sbin/{binary[family]}").exists():
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", APT[family]],
            check=True,
            env=env,
        )
    modules = {"redis": "redis", "nats": "nats", "rabbitmq": "pika"}
    try:
        __import__(modules[family])
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *PIP[family]], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


class Server:
    """One peer server process under a temporary directory."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.root = Path(tempfile.mkdtemp(prefix=f"peer-{system}-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self) -> Server:
        family = self.system.split("-")[0]
        log = (self.root / "server.log").open("ab")
        env = dict(os.environ)
        if family == "redis":
            argv = [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.root), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
            ]  # fmt: skip
            self.version = _first_line(["redis-server", "--version"])
            timeout_s = 20.0
        elif family == "nats":
            argv = ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
                    "-sd", str(self.root / "js")]  # fmt: skip
            self.version = _first_line(["nats-server", "--version"])
            timeout_s = 20.0
        else:
            argv, env = self._rabbitmq_argv(env)
            timeout_s = 90.0
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_port(self.port, timeout_s, self.process)
        if family == "rabbitmq":
            self.version = "RabbitMQ " + _dpkg_version("rabbitmq-server")
        return self

    def _rabbitmq_argv(self, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        plugins = self.root / "enabled_plugins"
        plugins.write_text("[].\n")
        cookie = self.root / ".erlang.cookie"
        cookie.write_text("conveyorbenchcookie")
        cookie.chmod(0o400)
        env.update(
            HOME=str(self.root),
            RABBITMQ_NODENAME=f"bench{self.port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_PID_FILE=str(self.root / "rabbit.pid"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.root / "feature_flags"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.root / "plugins-expand"),
        )
        (self.root / "rabbitmq.conf").write_text("loopback_users = none\n")
        return ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.system.startswith("rabbitmq"):
            _stop_epmd_of(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _stop_epmd_of(root: Path) -> None:
    """RabbitMQ starts epmd (a daemon outside its process group); stop the one that runs
    with this server's environment, by PID."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes()
            environ = (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if b"epmd" in cmdline and str(root).encode() in environ:
            os.kill(int(pid_dir.name), signal.SIGTERM)


def _first_line(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def _dpkg_version(package: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


# --- shared measuring helpers -------------------------------------------------------------------


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    if not ordered:
        return {}

    def rank(fraction: float) -> float:
        index = max(1, int(-(-fraction * len(ordered) // 1)))
        return ordered[min(index, len(ordered)) - 1] / 1000

    return {
        "count": len(ordered),
        "p50_us": rank(0.5),
        "p95_us": rank(0.95),
        "p99_us": rank(0.99),
        "max_us": ordered[-1] / 1000,
    }


def stamped(padding: bytes) -> bytes:
    return time.time_ns().to_bytes(8, "big") + padding


def paced(rate: int, duration_s: float, send: Callable[[int], None]) -> int:
    start = time.monotonic()
    sent = 0
    total = int(rate * duration_s)
    while sent < total:
        due = min(total, int(rate * (time.monotonic() - start)) + 1)
        if due <= sent:
            time.sleep(0.0002)
            continue
        while sent < due:
            send(sent)
            sent += 1
    return sent


def run_consumers(target: Callable[..., None], args: tuple[Any, ...], count: int) -> float:
    """Start CONSUMERS processes of ``target(index, counter, go, *args)``; release them
    together; return seconds until they consumed ``count`` messages in all."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    go = context.Event()
    ready = context.Barrier(CONSUMERS + 1)
    processes = [
        context.Process(target=target, args=(i, counter, go, ready, count, *args), daemon=True)
        for i in range(CONSUMERS)
    ]
    for process in processes:
        process.start()
    ready.wait(120)
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join(600)
    seconds = time.perf_counter() - started
    if counter.value < count:
        raise RuntimeError(f"consumed {counter.value} of {count}")
    return seconds


def add_and_check_done(counter: Any, n: int, count: int) -> bool:
    with counter.get_lock():
        counter.value += n
        return bool(counter.value >= count)


# --- Redis Streams ------------------------------------------------------------------------------


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def redis_produce(port: int, count: int) -> float:
    r = redis_client(port)
    r.delete("bench")
    value = os.urandom(MESSAGE_BYTES)
    keys = [f"key-{i}".encode() for i in range(KEYS)]
    started = time.perf_counter()
    for base in range(0, count, WINDOW):
        pipe = r.pipeline(transaction=False)
        for i in range(base, min(count, base + WINDOW)):
            pipe.xadd("bench", {"k": keys[i % KEYS], "v": value})
        ids = pipe.execute()  # every XADD answered: in the AOF buffer, fsynced within 1 s
        assert all(ids)
    return time.perf_counter() - started


def _redis_consumer(index: int, counter: Any, go: Any, ready: Any, count: int, port: int) -> None:
    r = redis_client(port)
    ready.wait(120)
    go.wait()
    name = f"c{index}"
    while counter.value < count:
        reply = r.xreadgroup("g", name, {"bench": ">"}, count=WINDOW, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        r.xack("bench", "g", *[entry_id for entry_id, _ in entries])
        if add_and_check_done(counter, len(entries), count):
            return


def redis_consume(port: int, count: int) -> float:
    r = redis_client(port)
    r.xgroup_create("bench", "g", id="0")
    return run_consumers(_redis_consumer, (port,), count)


def redis_latency(port: int) -> list[int]:
    r = redis_client(port)
    value = os.urandom(MESSAGE_BYTES)
    samples = []
    for i in range(W3_COUNT):
        started = time.perf_counter_ns()
        r.xadd("lat", {"k": f"key-{i % KEYS}", "v": value})
        samples.append(time.perf_counter_ns() - started)
    return samples


def _redis_e2e_reader(port: int, total: int, out: Any, ready: Any) -> None:
    r = redis_client(port)
    last = "$"
    latencies: list[int] = []
    ready.wait(60)
    while len(latencies) < total:
        reply = r.xread({"e2e": last}, count=WINDOW, block=1000)
        now = time.time_ns()
        for entry_id, fields in reply[0][1] if reply else []:
            latencies.append(now - int.from_bytes(fields[b"v"][:8], "big"))
            last = entry_id
    out.put(latencies)


def redis_e2e(port: int, seconds: float) -> list[int]:
    r = redis_client(port)
    r.xadd("e2e", {"v": b"0" * 8})  # the stream exists before the reader's "$"
    padding = os.urandom(MESSAGE_BYTES - 8)
    total = int(W4_RATE * seconds)
    return _with_reader(
        _redis_e2e_reader,
        (port, total),
        lambda: paced(W4_RATE, seconds, lambda i: r.xadd("e2e", {"v": stamped(padding)})),
    )


def _with_reader(
    target: Callable[..., None], args: tuple[Any, ...], produce: Callable[[], int]
) -> list[int]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ready = context.Barrier(2)
    reader = context.Process(target=target, args=(*args, out, ready), daemon=True)
    reader.start()
    ready.wait(60)
    time.sleep(0.5)  # the reader's first read is parked at the end of the stream
    produce()
    latencies: list[int] = out.get(timeout=120)
    reader.join(30)
    return latencies


# --- NATS JetStream -----------------------------------------------------------------------------


async def _nats(port: int) -> tuple[Any, Any]:
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    return nc, nc.jetstream()


async def _nats_stream(js: Any, name: str) -> None:
    from nats.js.api import StorageType, StreamConfig

    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], storage=StorageType.FILE))


async def _nats_produce(port: int, count: int) -> float:
    nc, js = await _nats(port)
    await _nats_stream(js, "BENCH")
    value = os.urandom(MESSAGE_BYTES)
    subjects = [f"BENCH.key-{i}" for i in range(KEYS)]
    started = time.perf_counter()
    for base in range(0, count, WINDOW):
        acks = [
            js.publish(subjects[i % KEYS], value) for i in range(base, min(count, base + WINDOW))
        ]
        await asyncio.gather(*acks)  # each a PubAck: stored in the file stream
    seconds = time.perf_counter() - started
    await nc.close()
    return seconds


def nats_produce(port: int, count: int) -> float:
    return asyncio.run(_nats_produce(port, count))


async def _nats_consumer_async(counter: Any, go: Any, ready: Any, count: int, port: int) -> None:
    nc, js = await _nats(port)
    sub = await js.pull_subscribe("BENCH.>", durable="g", stream="BENCH")
    ready.wait(120)
    go.wait()
    while counter.value < count:
        try:
            messages = await sub.fetch(WINDOW, timeout=0.2)
        except TimeoutError:
            continue
        for message in messages:
            await message.ack()
        if add_and_check_done(counter, len(messages), count):
            break
    await nc.close()


def _nats_consumer(index: int, counter: Any, go: Any, ready: Any, count: int, port: int) -> None:
    asyncio.run(_nats_consumer_async(counter, go, ready, count, port))


def nats_consume(port: int, count: int) -> float:
    async def create() -> None:
        from nats.js.api import AckPolicy, ConsumerConfig

        nc, js = await _nats(port)
        await js.add_consumer(
            "BENCH", ConsumerConfig(durable_name="g", ack_policy=AckPolicy.EXPLICIT)
        )
        await nc.close()

    asyncio.run(create())
    return run_consumers(_nats_consumer, (port,), count)


def nats_latency(port: int) -> list[int]:
    async def main() -> list[int]:
        nc, js = await _nats(port)
        await _nats_stream(js, "LAT")
        value = os.urandom(MESSAGE_BYTES)
        samples = []
        for i in range(W3_COUNT):
            started = time.perf_counter_ns()
            await js.publish(f"LAT.key-{i % KEYS}", value)
            samples.append(time.perf_counter_ns() - started)
        await nc.close()
        return samples

    return asyncio.run(main())


def _nats_e2e_reader(port: int, total: int, out: Any, ready: Any) -> None:
    async def main() -> list[int]:
        nc, js = await _nats(port)
        latencies: list[int] = []
        done = asyncio.Event()

        async def on_message(message: Any) -> None:
            latencies.append(time.time_ns() - int.from_bytes(message.data[:8], "big"))
            if len(latencies) >= total:
                done.set()

        from nats.js.api import DeliverPolicy

        await js.subscribe("E2E.>", cb=on_message, deliver_policy=DeliverPolicy.NEW)
        ready.wait(60)
        await asyncio.wait_for(done.wait(), 600)
        await nc.close()
        return latencies

    out.put(asyncio.run(main()))


def nats_e2e(port: int, seconds: float) -> list[int]:
    async def create() -> None:
        nc, js = await _nats(port)
        await _nats_stream(js, "E2E")
        await nc.close()

    asyncio.run(create())
    padding = os.urandom(MESSAGE_BYTES - 8)
    total = int(W4_RATE * seconds)

    def produce() -> int:
        async def main() -> int:
            nc, js = await _nats(port)
            start = time.monotonic()
            sent = 0
            while sent < total:
                due = min(total, int(W4_RATE * (time.monotonic() - start)) + 1)
                if due <= sent:
                    await asyncio.sleep(0.0002)
                    continue
                while sent < due:
                    await js.publish(f"E2E.key-{sent % KEYS}", stamped(padding))
                    sent += 1
            await nc.close()
            return sent

        return asyncio.run(main())

    return _with_reader(_nats_e2e_reader, (port, total), produce)


# --- RabbitMQ ---------------------------------------------------------------------------------


def rabbit_channel(port: int) -> tuple[Any, Any]:
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    return connection, connection.channel()


def rabbit_declare(channel: Any, queue: str, kind: str) -> None:
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": kind})


def rabbit_produce(port: int, count: int, kind: str) -> float:
    """Publisher confirms, WINDOW unconfirmed at a time (pika's blocking channel confirms
    each publish; its select-based connection confirms asynchronously: we use that)."""
    import pika

    connection, channel = rabbit_channel(port)
    rabbit_declare(channel, "bench", kind)
    connection.close()
    value = os.urandom(MESSAGE_BYTES)
    properties = pika.BasicProperties(delivery_mode=2)
    state = {"sent": 0, "confirmed": 0, "started": 0.0, "finished": 0.0}

    def publish_more(channel: Any) -> None:
        while state["sent"] < count and state["sent"] - state["confirmed"] < WINDOW:
            channel.basic_publish("", "bench", value, properties=properties)  # one queue: no keys
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        state["confirmed"] = tag if method.multiple else max(state["confirmed"], tag)
        if state["confirmed"] >= count:
            state["finished"] = time.perf_counter()
            connection_async.close()
            return
        publish_more(channel_ref[0])

    channel_ref: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_ref.append(channel)
        channel.confirm_delivery(on_confirm)
        state["started"] = time.perf_counter()
        publish_more(channel)

    connection_async = pika.SelectConnection(
        pika.ConnectionParameters("127.0.0.1", port),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
    )
    connection_async.ioloop.call_later(600, connection_async.ioloop.stop)
    connection_async.add_on_close_callback(lambda *_: connection_async.ioloop.stop())
    connection_async.ioloop.start()
    if state["confirmed"] < count:
        raise RuntimeError(f"only {state['confirmed']} of {count} confirmed")
    return state["finished"] - state["started"]


def _rabbit_consumer(index: int, counter: Any, go: Any, ready: Any, count: int, port: int) -> None:
    connection, channel = rabbit_channel(port)
    channel.basic_qos(prefetch_count=WINDOW)
    ready.wait(120)
    go.wait()
    pending = 0
    last_tag = 0
    for method, _properties, _body in channel.consume("bench", inactivity_timeout=0.2):
        if method is None:  # idle: settle what is held, then see whether all is done
            if pending:
                channel.basic_ack(last_tag, multiple=True)
                add_and_check_done(counter, pending, count)
                pending = 0
            if counter.value >= count:
                break
            continue
        last_tag = method.delivery_tag
        pending += 1
        if pending >= 100:  # ack in groups (multiple=True), as fast consumers do
            channel.basic_ack(method.delivery_tag, multiple=True)
            if add_and_check_done(counter, pending, count):
                break
            pending = 0
    else:
        return
    channel.cancel()
    connection.close()


def rabbit_consume(port: int, count: int) -> float:
    return run_consumers(_rabbit_consumer, (port,), count)


def rabbit_latency(port: int, kind: str) -> list[int]:
    import pika

    connection, channel = rabbit_channel(port)
    rabbit_declare(channel, "lat", kind)
    channel.confirm_delivery()
    value = os.urandom(MESSAGE_BYTES)
    properties = pika.BasicProperties(delivery_mode=2)
    samples = []
    for _ in range(W3_COUNT):
        started = time.perf_counter_ns()
        channel.basic_publish("", "lat", value, properties=properties)  # waits for the confirm
        samples.append(time.perf_counter_ns() - started)
    connection.close()
    return samples


def _rabbit_e2e_reader(port: int, total: int, out: Any, ready: Any) -> None:
    connection, channel = rabbit_channel(port)
    channel.basic_qos(prefetch_count=WINDOW)
    latencies: list[int] = []
    ready.wait(60)
    for method, _properties, body in channel.consume("e2e", inactivity_timeout=5):
        if method is None:
            break
        latencies.append(time.time_ns() - int.from_bytes(body[:8], "big"))
        channel.basic_ack(method.delivery_tag)
        if len(latencies) >= total:
            break
    out.put(latencies)
    connection.close()


def rabbit_e2e(port: int, seconds: float, kind: str) -> list[int]:
    import pika

    connection, channel = rabbit_channel(port)
    rabbit_declare(channel, "e2e", kind)
    channel.confirm_delivery()
    padding = os.urandom(MESSAGE_BYTES - 8)
    properties = pika.BasicProperties(delivery_mode=2)
    total = int(W4_RATE * seconds)
    try:
        return _with_reader(
            _rabbit_e2e_reader,
            (port, total),
            lambda: paced(
                W4_RATE,
                seconds,
                lambda i: channel.basic_publish("", "e2e", stamped(padding), properties=properties),
            ),
        )
    finally:
        connection.close()


# --- one run of every workload ----------------------------------------------------------------


def run_system(
    system: str,
    count: int,
    e2e_seconds: float,
    workloads: frozenset[str] = frozenset(("w1", "w2", "w3", "w4")),
) -> dict[str, Any]:
    """W1 and W2 always (W2 reads what W1 wrote); W3 and W4 when in ``workloads``."""
    server = Server(system)
    try:
        server.start()
        port = server.port
        latency: list[int] = []
        e2e: list[int] = []
        if system == "redis":
            produce_s = redis_produce(port, count)
            consume_s = redis_consume(port, count)
            if "w3" in workloads:
                latency = redis_latency(port)
            if "w4" in workloads:
                e2e = redis_e2e(port, e2e_seconds)
        elif system == "nats":
            produce_s = nats_produce(port, count)
            consume_s = nats_consume(port, count)
            if "w3" in workloads:
                latency = nats_latency(port)
            if "w4" in workloads:
                e2e = nats_e2e(port, e2e_seconds)
        else:
            kind = system.split("-")[1]
            produce_s = rabbit_produce(port, count, kind)
            consume_s = rabbit_consume(port, count)
            if "w3" in workloads:
                latency = rabbit_latency(port, kind)
            if "w4" in workloads:
                e2e = rabbit_e2e(port, e2e_seconds, kind)
        return {
            "system": system,
            "version": server.version,
            "count": count,
            "w1_produce_msg_per_s": count / produce_s,
            "w2_consume_msg_per_s": count / consume_s,
            "w3_ack_latency_us": percentiles_us(latency) if latency else None,
            "w4_e2e_latency_us": percentiles_us(e2e) if e2e else None,
            "w4_rate": W4_RATE,
            "w4_seconds": e2e_seconds,
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="redis,nats,rabbitmq-quorum,rabbitmq-classic")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--e2e-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--workloads", default="w1,w2,w3,w4", help="w1 and w2 always run; w3, w4 optional"
    )
    args = parser.parse_args()
    workloads = frozenset(args.workloads.split(","))
    for system in args.systems.split(","):
        ensure_installed(system)
        for run in range(args.runs):
            result = run_system(system, args.count, args.e2e_seconds, workloads)
            result["run"] = run
            line = json.dumps(result)
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
