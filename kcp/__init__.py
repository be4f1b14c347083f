"""kcp: netcat for Kafka/Avro, for astronomical alert streams.

The library is usable without the CLI::

    from kcp import Options, open_source, open_sink, run
    options = Options()
    run(open_source("ztf_20180725_programid1", options), open_sink("night.avro", options), options)
"""

from __future__ import annotations

import logging
from typing import Any

from .address import Address, is_tar_path, parse_address
from .codec import Schema, SchemaStore, load_schema_path
from .config import Config
from .errors import BadInput, ExitStatus, KcpError, TransportError, UsageError
from .formats import FORMATS, format_named, reader_for  # noqa: F401  (re-exported)
from .message import Message
from .options import Options
from .pipeline import Summary, run
from .transports import TRANSPORTS, transport

__version__ = "0.1.0"

logging.getLogger("kcp").addHandler(logging.NullHandler())

__all__ = [
    "FORMATS",
    "TRANSPORTS",
    "Address",
    "BadInput",
    "Config",
    "ExitStatus",
    "KcpError",
    "Message",
    "Options",
    "Schema",
    "SchemaStore",
    "Summary",
    "TransportError",
    "UsageError",
    "__version__",
    "load_schema_path",
    "open_sink",
    "open_source",
    "payload_encoder",
    "run",
]


def _address(text: str | Address, config: Config) -> Address:
    return text if isinstance(text, Address) else parse_address(text, config.brokers)


def _transport_of(address: Address) -> str:
    """The transport serving an address: a file whose extension names a tar goes to "tar"."""
    if address.kind == "file" and is_tar_path(address.path or address.text):
        return "tar"
    return address.kind


def open_source(text: str | Address, options: Options, config: Config | None = None,
                default_offset: str = "beginning") -> Any:
    """The source an address names: a topic, a file or glob, or stdin (``-``)."""
    config = config or Config.load()
    address = _address(text, config)
    module = transport(_transport_of(address))
    if address.kind == "kafka":
        return module.open_source(address, options, config, default_offset=default_offset)
    return module.open_source(address, options, config)


def payload_encoder(options: Options) -> Any:
    """Message -> payload for Kafka: ``--to`` if given; else the payload as read when the record
    is unchanged, and one Avro OCF per record otherwise (what ZTF sends)."""
    if options.write_format:
        return format_named(options.write_format).writer(options).encode
    avro = FORMATS["avro"].writer(options)
    reshaped = options.schemas.reader is not None or options.fields is not None

    def encode(message: Message) -> bytes:
        # A payload read from Kafka, an envelope or raw input passes as it was; records read
        # from files (JSON lines, OCF records) are encoded.
        if message.value is not None and not reshaped and (
                not message.decoded or message.topic is not None):
            return message.value
        return avro.encode(message)

    return encode


def open_sink(text: str | Address, options: Options, config: Config | None = None,
              keep_partition: bool = False, transactional: bool = False,
              rename: str | None = None, idle: float | None = None) -> Any:
    """The sink an address names: a topic, a file, or stdout (``-``).

    ``rename`` (Kafka, no topic named) names each record's destination from its source topic.
    ``transactional`` (Kafka only) writes in transactions; link a Kafka source to it with
    ``kcp.transports.kafka.exactly_once(source, sink)`` to commit offsets inside them.
    A file path holding ``{topic}`` writes one tar archive per topic (the archiver); ``idle``
    (seconds) finalises a topic's archive once the topic has been that long without a record.
    ``options.partition_by`` makes the path a folder of files, one folder per field value.
    """
    config = config or Config.load()
    address = _address(text, config)
    archives = address.kind == "file" and "{topic}" in (address.path or address.text)
    if idle is not None and not archives:
        raise UsageError(f"{address}: --idle finalises archives per topic: the destination "
                         "needs {topic}, e.g. 'archive/{topic}.tar.gz'")
    if archives and not transactional:
        from .transports import archive

        return archive.open_sink(address, options, config, idle_seconds=idle)
    if options.partition_by:
        if address.kind != "file" or transactional:
            raise UsageError(f"{address}: --partition-by writes a folder of files: give a "
                             "file destination such as night.parquet")
        from .transports import partitioned

        return partitioned.open_sink(address, options, config)
    module = transport(_transport_of(address))
    if address.kind == "kafka":
        return module.open_sink(address, options, config, payload_encoder(options),
                                keep_partition=keep_partition, transactional=transactional,
                                rename=rename)
    if transactional:
        raise UsageError(f"{address}: transactions need a Kafka destination")
    if address.kind == "file":
        # A copy that resumes (a consumer group) continues its file (or tar) rather than
        # replace it.
        return module.open_sink(address, options, config, resume=options.group is not None)
    return module.open_sink(address, options, config)
