"""Where records come from and go to: one module per transport, listed in TRANSPORTS.

Each module offers ``open_source(address, options, config) -> Source`` and
``open_sink(address, options, config) -> Sink``.  Modules load lazily: Kafka's client loads only
when an address names Kafka, which keeps ``kcp --help`` fast.

A Source iterates :class:`kcp.message.Message` objects; ``ack(message)`` marks one as handled
(written, skipped or dead-lettered) and ``checkpoint()`` makes those marks durable (Kafka: commits
offsets); ``close()`` ends it.  A Sink has ``write(message)``, ``flush()`` (everything written so
far is durable when it returns) and ``close()``.  ``Sink.payloads`` tells whether it takes
payloads (Kafka) rather than a stream (files, stdout).
"""

from __future__ import annotations

import importlib
from types import ModuleType

TRANSPORTS: dict[str, str] = {
    "kafka": "kcp.transports.kafka",
    "file": "kcp.transports.file",
    "stdio": "kcp.transports.stdio",
    "tar": "kcp.transports.tar",
}


def transport(kind: str) -> ModuleType:
    return importlib.import_module(TRANSPORTS[kind])
