"""The compose cluster seen from the host: the JSON HTTP API over HTTPS through the ports
published on 127.0.0.1, verified against the deployment's CA, with a bearer token. Brokers
advertise their service names (``https://broker-2:7702``), which only resolve inside the
compose network, so requests go to a leader by its broker id's published port instead of
its advertised URL (the server certificate also names 127.0.0.1)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.deploy.compose import Ports

REQUEST_TIMEOUT_S = 15.0
FETCH_MAX_BYTES = 1 << 20


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def request_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    context: ssl.SSLContext | None = None,
    token: str | None = None,
) -> Any:
    """One JSON request; HTTPStatusError for a non-2xx answer, OSError when unreachable."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        opened = urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S, context=context)
        with opened as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        raise HTTPStatusError(exc.code, raw.decode(errors="replace")) from None
    return json.loads(raw) if raw else None


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when ``url`` answers 200 (any body)."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S, context=context) as response:
            return bool(response.status == 200)
    except OSError:  # HTTPError (any non-2xx) is an OSError too
        return False


@dataclass(frozen=True)
class HostView:
    ports: Ports
    context: ssl.SSLContext  # verifies against the deployment's CA
    token: str

    @property
    def coordinator_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.coordinator}"

    def broker_url(self, broker_id: int) -> str:
        return f"https://127.0.0.1:{self.ports.brokers[broker_id]}"

    def request(self, method: str, url: str, body: Any = None) -> Any:
        return request_json(method, url, body, context=self.context, token=self.token)

    def ok(self, url: str) -> bool:
        return http_ok(url, self.context)

    def create_topic(self, name: str, partitions: int) -> Any:
        body = {"name": name, "partitions": partitions}
        return self.request("POST", f"{self.coordinator_url}/v1/topics", body)

    def leaders(self, topic: str) -> dict[int, int | None]:
        """partition -> leading broker id (None while the partition has no leader)."""
        query = urllib.parse.urlencode({"topics": topic})
        metadata = self.request("GET", f"{self.coordinator_url}/v1/metadata?{query}")
        (description,) = [t for t in metadata["topics"] if t["name"] == topic]
        return {p["partition"]: p.get("leader") for p in description["partitions"]}

    def alive_brokers(self) -> set[int]:
        status = self.request("GET", f"{self.coordinator_url}/v1/cluster")
        return {b["broker_id"] for b in status["brokers"] if b.get("alive", True)}

    def produce(self, broker_id: int, topic: str, partition: int, values: list[str]) -> int:
        """Send ``values`` with acks=all to ``broker_id``; returns the first offset once
        acknowledged. Any failure raises: the caller then counts nothing as written."""
        url = (
            f"{self.broker_url(broker_id)}/v1/topics/{topic}/partitions/{partition}/records"
            "?acks=all&timeout_ms=10000"
        )
        reply = self.request("POST", url, {"records": [{"value": v} for v in values]})
        if reply["last_offset"] - reply["base_offset"] + 1 != len(values):
            raise AssertionError(f"acknowledged offsets do not match the batch: {reply}")
        return int(reply["base_offset"])

    def fetch_all(self, broker_id: int, topic: str, partition: int) -> dict[int, str]:
        """Every record below the high watermark: offset -> value."""
        records: dict[int, str] = {}
        offset = 0
        while True:
            query = urllib.parse.urlencode({"offset": offset, "max_bytes": FETCH_MAX_BYTES})
            path = f"/v1/topics/{topic}/partitions/{partition}/records?{query}"
            reply = self.request("GET", self.broker_url(broker_id) + path)
            for record in reply["records"]:
                records[record["offset"]] = record["value"]
            if reply["next_offset"] >= reply["high_watermark"] or not reply["records"]:
                return records
            offset = reply["next_offset"]
