"""Shared fixtures of the Kafka-protocol tests: real coordinator and broker processes with
Kafka listeners on free ports (``tests/integration/cluster.py``), shared per module."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One coordinator and one broker with a Kafka listener (``.bootstrap``)."""
    c = Cluster(tmp_path_factory.mktemp("kafka"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def kafka_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One coordinator and three brokers with Kafka listeners."""
    c = Cluster(tmp_path_factory.mktemp("kafka3"), broker_count=3).start()
    try:
        yield c
    finally:
        c.stop()


def kcat_path() -> str:
    """kcat (Debian's ``kafkacat`` package), or the test is skipped saying how to get it."""
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.skip("kcat is not installed (apt-get install kafkacat; make system-deps)")
    return path


_topic_numbers = itertools.count(1)


def unique_topic(prefix: str = "t") -> str:
    """A topic name no other test of this process uses (tests in a module share a cluster)."""
    return f"{prefix}-{os.getpid()}-{next(_topic_numbers)}"
