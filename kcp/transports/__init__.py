"""Where records come from and go to: one module per transport, listed in TRANSPORTS.

Each module offers ``open_source(address, options, config) -> Source`` and
``open_sink(address, options, config) -> Sink`` (the contracts are in kcp.contracts).  Modules
load lazily: Kafka's client loads only when an address names Kafka, which keeps ``kcp --help``
fast.  :func:`transport_for` is the one place that routes an address to its transport.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..address import Address, is_tar_path

TRANSPORTS: dict[str, str] = {
    "kafka": "kcp.transports.kafka",
    "file": "kcp.transports.file",
    "stdio": "kcp.transports.stdio",
    "tar": "kcp.transports.tar",
    "archive": "kcp.transports.archive",
    # a file destination as a folder of files, one per field value (--partition-by)
    "partitioned": "kcp.transports.partitioned",
}


def transport(kind: str) -> ModuleType:
    return importlib.import_module(TRANSPORTS[kind])


def kind_of(address: Address) -> str:
    """The transport serving ``address``: a path holding ``{topic}`` is one archive per topic,
    a path whose extension names a tar is an archive of members, other paths are files."""
    if address.kind != "file":
        return address.kind
    path = address.path or address.text
    if "{topic}" in path:
        return "archive"
    return "tar" if is_tar_path(path) else "file"


def transport_for(address: Address) -> ModuleType:
    return transport(kind_of(address))
