"""The broker end to end: real coordinator and broker processes on 127.0.0.1, spoken to
over HTTP with httpx the way curl users and other languages do."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import httpx

from conveyor.protocol.batch import CRC_START
from conveyor.protocol.partitioner import partition_for_key
from conveyor.protocol.records import decode_batches, encode_batch
from tests.integration.cluster import Cluster, wait_for

BATCH = "application/vnd.conveyor.record-batch"
BINARY = {"Content-Type": BATCH}
ACCEPT_BINARY = {"Accept": BATCH}
LIMIT_S = 20.0


def create_topic(cluster: Cluster, name: str, partitions: int, **config: object) -> None:
    body: dict[str, object] = {"name": name, "partitions": partitions, "replication_factor": 1}
    if config:
        body["config"] = config
    response = httpx.post(f"{cluster.url}/v1/topics", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text


def leaders(cluster: Cluster, topic: str) -> dict[int, str]:
    """partition -> URL of its leader, once every leader has taken its partitions."""
    out: dict[int, str] = {}

    def all_led() -> bool:
        response = httpx.get(f"{cluster.url}/v1/metadata", params={"topics": topic}, timeout=5)
        if response.status_code != 200:
            return False
        (description,) = response.json()["topics"]
        out.clear()
        for info in description["partitions"]:
            url = info.get("leader_url")
            if url is None:
                return False
            hosted = httpx.get(f"{url}/v1/partitions", timeout=5).json()["partitions"]
            if not any(
                p["topic"] == topic
                and p["partition"] == info["partition"]
                and p["role"] == "leader"
                for p in hosted
            ):
                return False
            out[info["partition"]] = url
        return True

    wait_for(all_led, LIMIT_S, f"leaders of {topic}")
    return out


def records_path(url: str, topic: str, partition: int) -> str:
    return f"{url}/v1/topics/{topic}/partitions/{partition}/records"


def log_end(url: str, topic: str, partition: int) -> int:
    response = httpx.get(f"{url}/v1/topics/{topic}/partitions/{partition}/offsets", timeout=5)
    assert response.status_code == 200, response.text
    return int(response.json()["log_end_offset"])


def test_binary_produce_binary_and_json_fetch(cluster: Cluster) -> None:
    create_topic(cluster, "round", 1)
    url = leaders(cluster, "round")[0]
    batch = encode_batch([(b"k1", b"v1"), (None, "żółw".encode()), (b"k3", b"\xff\x00")])
    response = httpx.post(records_path(url, "round", 0), content=batch, headers=BINARY)
    assert response.status_code == 200, response.text
    assert (response.json()["base_offset"], response.json()["last_offset"]) == (0, 2)

    response = httpx.get(records_path(url, "round", 0), params={"offset": 0}, headers=ACCEPT_BINARY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(BATCH)
    assert response.headers["X-Conveyor-High-Watermark"] == "3"
    assert response.headers["X-Conveyor-Log-Start-Offset"] == "0"
    assert response.headers["X-Conveyor-Log-End-Offset"] == "3"
    assert int(response.headers["X-Conveyor-Leader-Epoch"]) >= 0
    stored = response.content
    # Byte for byte what the producer sent, but for the offset and epoch the broker stamps.
    assert stored[:8] == (0).to_bytes(8, "big")
    assert stored[8:12] == batch[8:12] and stored[16:] == batch[16:]

    response = httpx.get(records_path(url, "round", 0), params={"offset": 1})
    body = response.json()
    assert body["next_offset"] == 3 and body["high_watermark"] == 3
    got = [
        (r["offset"], r.get("key"), r["value"], r.get("value_encoding", "utf8"))
        for r in body["records"]
    ]
    assert got == [
        (1, None, "żółw", "utf8"),
        (2, "k3", base64.b64encode(b"\xff\x00").decode(), "base64"),
    ]


def test_json_produce_utf8_and_base64(cluster: Cluster) -> None:
    create_topic(cluster, "curl", 1)
    url = leaders(cluster, "curl")[0]
    payload = {
        "records": [
            {"key": "user-1", "value": "hello", "headers": {"trace": "abc"}},
            {"value": base64.b64encode(b"\x00\x01\xfe").decode(), "value_encoding": "base64"},
        ]
    }
    response = httpx.post(records_path(url, "curl", 0), json=payload, params={"acks": "all"})
    assert response.status_code == 200, response.text
    response = httpx.get(records_path(url, "curl", 0), params={"offset": 0}, headers=ACCEPT_BINARY)
    records = decode_batches(response.content)
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"user-1", b"hello", (("trace", b"abc"),)),
        (None, b"\x00\x01\xfe", ()),
    ]


def test_long_poll_returns_when_a_produce_lands(cluster: Cluster) -> None:
    create_topic(cluster, "poll", 1)
    url = leaders(cluster, "poll")[0]
    max_wait_ms = 20_000
    result: Future[tuple[float, httpx.Response]] = Future()

    def fetch() -> None:
        started = time.monotonic()
        response = httpx.get(
            records_path(url, "poll", 0),
            params={"offset": 0, "max_wait_ms": max_wait_ms},
            headers=ACCEPT_BINARY,
            timeout=60,
        )
        result.set_result((time.monotonic() - started, response))

    thread = threading.Thread(target=fetch)
    thread.start()
    # the fetch is parked on the broker (the scrape is the other request in flight)
    wait_for(lambda: _in_flight(cluster, url) >= 2, LIMIT_S, "the long poll to reach the broker")
    assert not result.done()
    httpx.post(records_path(url, "poll", 0), content=encode_batch([(None, b"now")]), headers=BINARY)
    elapsed_s, response = result.result(timeout=60)
    thread.join()
    assert [r.value for r in decode_batches(response.content)] == [b"now"]
    assert elapsed_s < max_wait_ms / 1000 / 2


def test_bad_input_gets_typed_errors_and_changes_nothing(cluster: Cluster) -> None:
    create_topic(cluster, "strict", 1)
    url = leaders(cluster, "strict")[0]
    path = records_path(url, "strict", 0)
    good = encode_batch([(None, b"x")])
    assert httpx.post(path, content=good, headers=BINARY).status_code == 200
    corrupt = bytearray(good)
    corrupt[CRC_START + 2] ^= 0x01
    too_big = encode_batch([(None, b"x" * (1024 * 1024 + 10))])
    cases = [
        (
            "malformed JSON",
            httpx.post(
                path, content=b'{"records": [', headers={"Content-Type": "application/json"}
            ),
            400,
            "INVALID_REQUEST",
        ),
        (
            "wrong content type",
            httpx.post(path, content=b"x", headers={"Content-Type": "text/plain"}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "bad CRC",
            httpx.post(path, content=bytes(corrupt), headers=BINARY),
            400,
            "CORRUPT_MESSAGE",
        ),
        ("over size", httpx.post(path, content=too_big, headers=BINARY), 413, "MESSAGE_TOO_LARGE"),
        (
            "invalid topic name",
            httpx.post(records_path(url, "bad*name", 0), content=good, headers=BINARY),
            400,
            "INVALID_TOPIC",
        ),
        (
            "unknown topic",
            httpx.post(records_path(url, "missing", 0), content=good, headers=BINARY),
            404,
            "UNKNOWN_TOPIC",
        ),
        (
            "unknown partition",
            httpx.post(records_path(url, "strict", 5), content=good, headers=BINARY),
            404,
            "UNKNOWN_PARTITION",
        ),
        ("negative offset", httpx.get(path, params={"offset": -1}), 400, "INVALID_REQUEST"),
        ("offset past the end", httpx.get(path, params={"offset": 2}), 416, "OFFSET_OUT_OF_RANGE"),
    ]
    for what, response, status, code in cases:
        assert (response.status_code, response.json()["code"]) == (status, code), what
        assert response.json()["message"], what
    details = cases[-1][1].json()["details"]
    assert (details["log_start_offset"], details["log_end_offset"]) == (0, 1)
    too_large = cases[3][1].json()["message"]  # says the limit and the setting that raises it
    assert "topic 'strict'" in too_large and "limit of 1048576 bytes" in too_large
    assert "max_message_bytes" in too_large
    assert log_end(url, "strict", 0) == 1


def test_routed_produce_status_when_records_fail(cluster: Cluster) -> None:
    """docs/api.md: 200 all written; every record failed with one code: that code's status
    and an ErrorBody; some failed: 207 with the per-record results."""
    create_topic(cluster, "routed", 2)
    url = leaders(cluster, "routed")[0]
    path = f"{url}/v1/topics/routed/records"
    huge = "x" * (1024 * 1024 + 100)  # one record over the topic's 1 MiB max_message_bytes
    all_failed = httpx.post(path, json={"records": [{"value": huge, "partition": 0}]}, timeout=30)
    assert all_failed.status_code == 413, all_failed.text
    body = all_failed.json()
    assert body["code"] == "MESSAGE_TOO_LARGE" and body["details"]["failed_records"] == 1
    assert "max_message_bytes" in body["message"] and "1048576" in body["message"]
    mixed = httpx.post(
        path,
        json={"records": [{"value": "small", "partition": 0}, {"value": huge, "partition": 1}]},
        timeout=30,
    )
    assert mixed.status_code == 207, mixed.text
    small, big = mixed.json()["results"]
    assert small == {"partition": 0, "offset": 0}
    assert big["error"]["code"] == "MESSAGE_TOO_LARGE"
    ok = httpx.post(path, json={"records": [{"value": "fine", "partition": 1}]}, timeout=30)
    assert ok.status_code == 200 and ok.json()["results"] == [{"partition": 1, "offset": 0}]


def test_produce_to_a_non_leader_is_421_with_the_leader(cluster3: Cluster) -> None:
    create_topic(cluster3, "spread", 3)
    led = leaders(cluster3, "spread")
    partition, leader_url = next(iter(led.items()))
    other = next(b.url for b in cluster3.brokers.values() if b.url != leader_url)
    good = encode_batch([(None, b"x")])
    response = httpx.post(records_path(other, "spread", partition), content=good, headers=BINARY)
    assert response.status_code == 421, response.text
    body = response.json()
    assert body["code"] == "NOT_LEADER" and body["retriable"] is True
    assert body["details"]["leader_url"] == leader_url
    assert body["details"]["leader_epoch"] >= 0
    assert log_end(leader_url, "spread", partition) == 0


def test_data_survives_a_restart(cluster: Cluster) -> None:
    create_topic(cluster, "durable", 2)
    led = leaders(cluster, "durable")
    sent = {p: encode_batch([(None, f"p{p}-{i}".encode()) for i in range(5)]) for p in led}
    for p, url in led.items():
        assert httpx.post(
            records_path(url, "durable", p), content=sent[p], headers=BINARY
        ).is_success
    cluster.restart()
    for p, url in leaders(cluster, "durable").items():
        response = httpx.get(
            records_path(url, "durable", p), params={"offset": 0}, headers=ACCEPT_BINARY
        )
        assert [r.value for r in decode_batches(response.content)] == [
            f"p{p}-{i}".encode() for i in range(5)
        ]
        assert response.content[16:] == sent[p][16:]


def test_routing_spreads_keys_and_forwards(cluster3: Cluster) -> None:
    create_topic(cluster3, "routed", 6)
    led = leaders(cluster3, "routed")
    assert len(set(led.values())) > 1, "want partitions led by several brokers"
    keys = [f"customer-{i}" for i in range(40)]
    payload = {"records": [{"key": k, "value": f"order of {k}"} for k in keys]}
    response = httpx.post(
        f"{cluster3.brokers[1].url}/v1/topics/routed/records", json=payload, timeout=30
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["partition"] for r in results] == [partition_for_key(k.encode(), 6) for k in keys]
    assert all("error" not in r for r in results), results
    for p, url in led.items():
        response = httpx.get(
            records_path(url, "routed", p), params={"offset": 0}, headers=ACCEPT_BINARY
        )
        stored = {(r.offset, r.key) for r in decode_batches(response.content)}
        wanted = {
            (r["offset"], keys[i].encode()) for i, r in enumerate(results) if r["partition"] == p
        }
        assert wanted == stored


def test_routing_auto_creates_unless_switched_off(cluster: Cluster, tmp_path: Path) -> None:
    payload = {"records": [{"key": "a", "value": "first"}]}
    broker_url = cluster.brokers[1].url
    response = httpx.post(f"{broker_url}/v1/topics/fresh/records", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert "error" not in result and result["offset"] == 0

    strict = Cluster(tmp_path / "strict", coordinator_args=["--no-auto-create-topics"]).start()
    try:
        url = strict.brokers[1].url
        for path in ("/v1/topics/missing/records", "/v1/topics/missing/partitions/0/records"):
            response = httpx.post(url + path, json=payload, timeout=30)
            assert (response.status_code, response.json()["code"]) == (404, "UNKNOWN_TOPIC")
        response = httpx.get(f"{strict.url}/v1/metadata", params={"topics": "missing"})
        assert response.status_code == 404
    finally:
        strict.stop()


def test_a_client_that_disconnects_mid_fetch_is_not_an_error(cluster: Cluster) -> None:
    """Consumers close connections with long polls in flight all the time: the broker
    counts a 499 and must not log an ERROR with a traceback (it did, once per disconnect)."""
    create_topic(cluster, "gone", 1)
    url = leaders(cluster, "gone")[0]
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    context = None if cluster.ca is None else ssl.create_default_context(cafile=str(cluster.ca))
    for _ in range(3):
        raw = socket.create_connection((host, int(port)), timeout=5)
        sock = raw if context is None else context.wrap_socket(raw, server_hostname=host)
        request = (
            "GET /v1/topics/gone/partitions/0/records?offset=0&max_wait_ms=300 HTTP/1.1\r\n"
            f"Host: {host}\r\nAccept: {BATCH}\r\n\r\n"
        )
        sock.sendall(request.encode())
        sock.close()  # gone before the long poll answers

    def answered_499() -> bool:
        text = httpx.get(f"{url}/metrics", timeout=5, verify=_verify(cluster)).text
        return any(
            line.startswith("conveyor_http_requests_total{")
            and 'status="499"' in line
            and "/records" in line
            and float(line.rsplit(" ", 1)[1]) >= 3
            for line in text.splitlines()
        )

    wait_for(answered_499, LIMIT_S, "the three long polls to end as 499 (client gone)")
    logs = cluster.logs()
    assert "Error handling request" not in logs
    assert "Cannot write to closing transport" not in logs
    assert "level=error" not in logs


def _verify(cluster: Cluster) -> ssl.SSLContext | bool:
    return True if cluster.ca is None else ssl.create_default_context(cafile=str(cluster.ca))


def _in_flight(cluster: Cluster, url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5, verify=_verify(cluster)).text
    (line,) = [x for x in text.splitlines() if x.startswith("conveyor_http_requests_in_flight ")]
    return float(line.rsplit(" ", 1)[1])
