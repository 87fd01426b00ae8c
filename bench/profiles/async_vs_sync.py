# ruff: noqa -- one-off profiling scripts quoted by docs/benchmarks.md, kept as run
"""W1: Producer.send (I/O thread) against AsyncProducer.send_nowait (caller's loop), CPU per message."""
import asyncio, os, time
from conveyor.bench.local import LocalCluster
from conveyor.bench.fetch import wait_until_served
from conveyor.client import Producer, AsyncProducer, Admin
from conveyor.client.loop import new_event_loop
N = 500_000
v = os.urandom(100); keys = [f"key-{i}".encode() for i in range(8)]
def sync(url, topic):
    p = Producer(url); p.send(topic, v, keys[0]).result()
    t = time.perf_counter(); c = time.process_time()
    send = p.send
    for i in range(N): send(topic, v, keys[i & 7])
    p.flush(); r = (time.perf_counter() - t, time.process_time() - c); p.close(); return r
async def asyn(url, topic):
    p = AsyncProducer(url); await p.send(topic, v, keys[0])
    t = time.perf_counter(); c = time.process_time()
    send = p.send_nowait
    for i in range(N):
        send(topic, v, keys[i & 7])
        if i & 1023 == 0: await asyncio.sleep(0)
    await p.flush(); r = (time.perf_counter() - t, time.process_time() - c); await p.close(); return r
with LocalCluster(1) as c:
    a = Admin(c.url)
    for t in ("s1", "a1", "s2", "a2"): a.create_topic(t, 8)
    a.close()
    for t in ("s1", "a1", "s2", "a2"): asyncio.run(wait_until_served(c.url, t, range(8)))
    for t in ("s1", "a1", "s2", "a2"):
        b0 = c.broker_cpu_s()
        wall, cpu = sync(c.url, t) if t[0] == "s" else new_event_loop().run_until_complete(asyn(c.url, t))
        print(t, "wall %.2f s  %.0f msg/s  client CPU %.2f us/msg  broker CPU %.2f us/msg" % (wall, N / wall, cpu / N * 1e6, (c.broker_cpu_s() - b0) / N * 1e6))
