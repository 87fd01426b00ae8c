# ruff: noqa -- one-off profiling scripts quoted by docs/benchmarks.md, kept as run
"""W2 profile: read 400,000 messages from 4 partitions with the benchmark's fetch loop.
Run under py-spy: py-spy record -o consumer.txt -f raw -r 200 -- python bench/profiles/consume.py"""
import asyncio, os, time
from conveyor.bench.local import LocalCluster
from conveyor.bench.fetch import open_readers, wait_until_served
from conveyor.client import Producer, Admin
with LocalCluster(1) as c:
    a = Admin(c.url); a.create_topic("t", 4); a.close()
    asyncio.run(wait_until_served(c.url, "t", range(4)))
    p = Producer(c.url); v = os.urandom(100); keys=[f"key-{i}".encode() for i in range(8)]
    for i in range(400_000): p.send("t", v, keys[i & 7])
    p.flush(); p.close()
    async def main():
        http, readers = await open_readers(c.url, "t", (0,1,2,3), from_end=False, fetch_max_bytes=4<<20, fetch_max_wait_ms=100)
        print("ends", [(r.offset, r.end_offset) for r in readers]); t=time.perf_counter(); c0=time.process_time(); b0=c.broker_cpu_s(); n=0
        async def one(r):
            nonlocal n
            while r.offset < r.end_offset:
                got = len(await r.fetch())
                n += got
        await asyncio.gather(*(one(r) for r in readers))
        print("consumed", n, "wall", time.perf_counter()-t, "cpu", time.process_time()-c0, "broker cpu", c.broker_cpu_s()-b0)
        await http.close()
    asyncio.run(main())
