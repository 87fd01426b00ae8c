"""etcd client TLS: the metadata store over ``etcds://`` with a client certificate against
a real etcd member that requires one (certificates from ``conveyor certs init``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.cli.etcd_local import EtcdMember, LocalEtcd, _free_port
from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore
from conveyor.protocol.errors import ConveyorError
from conveyor.transport.certs import init_certs
from conveyor.transport.etcd import EtcdClient, EtcdSettings, parse_endpoints
from conveyor.transport.tls import TLSConfig
from tests.ha.conftest import require_etcd
from tests.ha.test_metastore import claim, drive, durable_view, steps


def test_the_store_works_over_mutual_tls_and_refuses_without_a_client_certificate(
    tmp_path: Path,
) -> None:
    require_etcd()
    certs = init_certs(tmp_path / "certs", ["127.0.0.1", "localhost"])
    member = EtcdMember(
        "etcd-0", "127.0.0.1", _free_port("127.0.0.1"), _free_port("127.0.0.1"),
        tmp_path / "etcd-0", tmp_path / "etcd-0.log",
        tls=(certs.server_cert, certs.server_key, certs.ca),
    )  # fmt: skip
    etcd = LocalEtcd(tmp_path, 1, members=[member])
    etcd.start()
    endpoints = parse_endpoints(etcd.store_url)
    assert endpoints[0].startswith("https://")
    layout = EtcdLayout("/tls")
    mutual = TLSConfig(
        cafile=str(certs.ca),
        client_certfile=str(certs.client_cert),
        client_keyfile=str(certs.client_key),
    )

    async def scenario() -> None:
        client = EtcdClient(EtcdSettings(endpoints, tls=mutual))
        try:
            epoch = await claim(client, layout)
            store = await EtcdMetadataStore.open(client, layout, epoch)
            written = await drive(store, steps()[:4])
            reread = await EtcdMetadataStore.open(client, layout, epoch)
            assert durable_view(await reread.load()) == durable_view(written)
        finally:
            await client.close()
        anonymous = EtcdClient(EtcdSettings(endpoints, tls=TLSConfig(cafile=str(certs.ca))))
        try:
            with pytest.raises(ConveyorError):
                await anonymous.get(layout.meta)
        finally:
            await anonymous.close()

    try:
        asyncio.run(scenario())
    finally:
        etcd.stop()
