from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import TLS_DIR_ENV, Cluster


@pytest.fixture(scope="session", autouse=True)
def https_mode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``CONVEYOR_TEST_TLS=1 pytest tests/integration``: the same suite with every cluster
    on HTTPS (one CA for the session). Clients in this process verify against it through
    ``CONVEYOR_CA`` (the library), ``SSL_CERT_FILE`` (urllib, httpx) and
    ``REQUESTS_CA_BUNDLE`` (requests, under schemathesis)."""
    if os.environ.get("CONVEYOR_TEST_TLS", "") not in ("1", "true"):
        yield
        return
    from conveyor.transport.certs import init_certs

    certs = init_certs(tmp_path_factory.mktemp("suite-certs"))
    names = (TLS_DIR_ENV, "CONVEYOR_CA", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ[TLS_DIR_ENV] = str(certs.directory)
    os.environ["CONVEYOR_CA"] = str(certs.ca)
    os.environ["SSL_CERT_FILE"] = str(certs.ca)
    os.environ["REQUESTS_CA_BUNDLE"] = str(certs.ca)  # requests (schemathesis) uses certifi
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """One coordinator and one broker, real processes on free ports."""
    c = Cluster(tmp_path, broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    """One coordinator and three brokers."""
    c = Cluster(tmp_path, broker_count=3).start()
    try:
        yield c
    finally:
        c.stop()
