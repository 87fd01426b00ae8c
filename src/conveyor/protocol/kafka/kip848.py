"""Wire types of KIP-848's ConsumerGroupHeartbeat (API key 68) and ConsumerGroupDescribe
(69), which kafka-python 3.0's ``kafka.protocol`` does not have: its own message machinery
(``ApiMessage``, the same codec every other served API uses) over Kafka's JSON schemas,
kept beside this module (``schemas/``)."""

from __future__ import annotations

import warnings

from conveyor.protocol.kafka import schemas

with warnings.catch_warnings():  # kafka-python's schema loading (see apis.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.api_message import ApiMessage

    class ConsumerGroupHeartbeatRequest(ApiMessage, load_json=schemas):  # type: ignore[misc, call-arg]
        pass

    class ConsumerGroupHeartbeatResponse(ApiMessage, load_json=schemas):  # type: ignore[misc, call-arg]
        pass

    class ConsumerGroupDescribeRequest(ApiMessage, load_json=schemas):  # type: ignore[misc, call-arg]
        pass

    class ConsumerGroupDescribeResponse(ApiMessage, load_json=schemas):  # type: ignore[misc, call-arg]
        pass


__all__ = [
    "ConsumerGroupDescribeRequest",
    "ConsumerGroupDescribeResponse",
    "ConsumerGroupHeartbeatRequest",
    "ConsumerGroupHeartbeatResponse",
]
