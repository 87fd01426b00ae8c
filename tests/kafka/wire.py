"""A raw Kafka protocol client for tests: frames built with kafka-python's message classes
(an independent encoder, not Conveyor's), sent over a plain or TLS socket."""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from conveyor.protocol.kafka.apis import SERVED, ApiKey, is_flexible, response_is_flexible
from conveyor.protocol.records import encode_batch


def request_frame(
    api_key: int, version: int, body: bytes | bytearray, correlation_id: int = 1
) -> bytes:
    """Header (v1, or v2 for flexible versions) + body, with the size prefix."""
    client = b"conveyor-test"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client)) + client
    if is_flexible(api_key, version):
        header += b"\x00"
    payload = header + bytes(body)
    return struct.pack(">i", len(payload)) + payload


def encode_request(key: ApiKey, version: int, /, **fields: Any) -> bytes:
    message = SERVED[key].request[version](**fields)
    return bytes(message.encode(version=version))


def metadata_topics(version: int, names: list[str]) -> list[Any]:
    topic = SERVED[ApiKey.METADATA].request[version].MetadataRequestTopic
    return [topic(name=name) for name in names]


def produce_request(
    version: int, topic: str, partition: int, records: bytes, acks: int = -1, **fields: Any
) -> dict[str, Any]:
    """The fields of a one-partition Produce."""
    request = SERVED[ApiKey.PRODUCE].request[version]
    data = request.TopicProduceData
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 10_000,
        "topic_data": [
            data(
                name=topic,
                partition_data=[data.PartitionProduceData(index=partition, records=records)],
            )
        ],
        **fields,
    }


def fetch_request(
    version: int,
    topic: str,
    partition: int,
    offset: int,
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    partition_max_bytes: int = 1024 * 1024,
) -> dict[str, Any]:
    request = SERVED[ApiKey.FETCH].request[version]
    fetch_topic = request.FetchTopic
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": 50 * 1024 * 1024,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            fetch_topic(
                topic=topic,
                partitions=[
                    fetch_topic.FetchPartition(
                        partition=partition,
                        current_leader_epoch=-1,
                        fetch_offset=offset,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=partition_max_bytes,
                    )
                ],
            )
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def list_offsets_request(
    version: int, topic: str, partition: int, timestamp: int
) -> dict[str, Any]:
    request = SERVED[ApiKey.LIST_OFFSETS].request[version]
    list_topic = request.ListOffsetsTopic
    return {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [
            list_topic(
                name=topic,
                partitions=[
                    list_topic.ListOffsetsPartition(
                        partition_index=partition, current_leader_epoch=-1, timestamp=timestamp
                    )
                ],
            )
        ],
    }


def sample_batch(count: int = 3, key: bytes | None = b"k", **batch: Any) -> bytes:
    return encode_batch([(key, b"value-%d" % i) for i in range(count)], **batch)


class KafkaWire:
    """One connection; ``call`` sends a request and reads its answer."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection((host, port), timeout=10)
        self.sock: socket.socket = (
            context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        )
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KafkaWire:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        size = struct.unpack(">i", self._read_exactly(4))[0]
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks += chunk
        return bytes(chunks)

    def call(self, key: ApiKey, version: int, /, **fields: Any) -> Any:
        self._correlation += 1
        body = encode_request(key, version, **fields)
        self.send_raw(request_frame(key, version, body, self._correlation))
        frame = self.read_frame()
        correlation = struct.unpack(">i", frame[:4])[0]
        assert correlation == self._correlation
        offset = 5 if response_is_flexible(key, version) else 4
        return SERVED[key].response[version].decode(memoryview(frame[offset:]), version=version)

    def closed_by_broker(self, timeout_s: float = 5.0) -> bool:
        """True when the broker closes (or resets) the connection within ``timeout_s``."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
