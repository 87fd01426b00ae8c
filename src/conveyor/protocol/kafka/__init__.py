"""The Kafka wire protocol, without I/O: framing, request and response headers, the table
of served APIs and versions, the mapping of Conveyor's error codes onto Kafka's, and the
decode/encode functions the listener (``transport/kafka_server.py``) and the handlers
(``broker/kafka/``) share.

Message bodies are kafka-python 3.0's ``kafka.protocol`` classes (generated from Kafka's
own JSON message schemas; every version, flexible ones included). Why that library and not
``kio``: ``docs/kafka-compatibility.md`` ("Wire types"). Everything here is a pure function
of its input, so it is unit-tested and fuzzed with hypothesis without a socket.
"""
