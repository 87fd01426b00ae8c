# ruff: noqa -- one-off profiling scripts quoted by docs/benchmarks.md, kept as run
"""W3 breakdown: sequential send->ack with flush=always and flush=never, and a bare HTTP round trip."""
import asyncio, os, time, statistics, sys
from conveyor.bench.local import LocalCluster
from conveyor.bench.fetch import wait_until_served
from conveyor.client import Producer, Admin
import urllib.request
def run(flush):
    with LocalCluster(1, flush=flush) as c:
        a = Admin(c.url); a.create_topic("t", 8); a.close()
        asyncio.run(wait_until_served(c.url, "t", range(8)))
        p = Producer(c.url, linger_ms=0); v = os.urandom(100)
        for i in range(200): p.send("t", v, b"k").result()
        s=[]
        for i in range(2000):
            t=time.perf_counter_ns(); p.send("t", v, b"k").result(); s.append(time.perf_counter_ns()-t)
        p.close()
        # bare HTTP round trip to the broker's /readyz, with urllib (new connection each) and a kept-alive http.client
        import http.client
        url = c.broker_services[0].url.split("//")[1]; host, port = url.split(":")
        conn = http.client.HTTPConnection(host, int(port)); h=[]
        for i in range(2000):
            t=time.perf_counter_ns(); conn.request("GET", "/readyz"); conn.getresponse().read(); h.append(time.perf_counter_ns()-t)
        s.sort(); h.sort()
        print(flush, "send->ack p50 %.0f p99 %.0f us" % (s[1000]/1000, s[1980]/1000), "| bare HTTP GET /readyz keep-alive p50 %.0f us" % (h[1000]/1000))
run("always"); run("never"); run("always"); run("never")
