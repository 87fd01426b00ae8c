# ruff: noqa -- one-off profiling scripts quoted by docs/benchmarks.md, kept as run
"""W1 profile: one Producer sending 1,000,000 x 100 B over 8 keys; py-spy records the broker.
Run under py-spy: py-spy record -o producer.txt -f raw -r 200 --threads -- python bench/profiles/produce.py"""
import sys, time, os
from conveyor.bench.local import LocalCluster
from conveyor.client import Producer, Admin
import subprocess
with LocalCluster(1) as c:
    a = Admin(c.url); a.create_topic("t", 8); a.close()
    import asyncio
    from conveyor.bench.fetch import wait_until_served
    asyncio.run(wait_until_served(c.url, "t", range(8)))
    bpid = c.broker_pids()[0]
    spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-o", "/tmp/broker.txt", "-f", "raw", "-p", str(bpid), "-d", "8", "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = Producer(c.url, acks="all")
    keys = [f"key-{i}".encode() for i in range(8)]
    v = os.urandom(100)
    t = time.perf_counter(); c0 = time.process_time(); b0 = c.broker_cpu_s()
    for i in range(1_000_000):
        p.send("t", v, keys[i & 7])
    t_send = time.perf_counter() - t
    p.flush()
    print("send loop", t_send, "total", time.perf_counter() - t, "cpu", time.process_time() - c0, "broker cpu", c.broker_cpu_s() - b0)
    p.close()
    spy.wait()
