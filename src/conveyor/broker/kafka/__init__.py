"""The Kafka protocol adapter of the broker: one module per API family, each a handler
over the same operations the HTTP routes call (``BrokerService.produce``, ``fetch``,
``offsets``; the coordinator's metadata and producer-id endpoints), never a second path.

    listener.py      wiring: builds the registry from narrow dependencies, starts the
                     listener (transport/kafka_server.py) with the broker
    session.py       per connection: decode, authentication gate, dispatch, encode
    registry.py      API key -> handler; the per-request context
    auth.py          ACL checks for a principal (protocol/security.authorize)
    api_versions.py  ApiVersions
    metadata.py      Metadata (brokers with their Kafka addresses, topics, auto-creation)
    produce.py       Produce
    fetch.py         Fetch
    offsets.py       ListOffsets, OffsetForLeaderEpoch
    producer_id.py   InitProducerId
    sasl.py          SaslHandshake, SaslAuthenticate (PLAIN, SCRAM-SHA-256/512)
"""
