"""VOEvent: the IVOA's XML packets for transient events (GCN, LVK, SVOM, Gaia...), as Avro records.

Reading turns a packet into a record of ``schemas/voevent/voevent.avsc``: typed fields named as in
the standard (``.What.Param[].value``), plus an ``extra`` escape hatch on every element and a
``document`` on the root, so that writing the record reproduces the packet (docs/voevent.md says
exactly what is normalised).  Writing any other record (a ZTF, Rubin or other alert) maps it onto
a VOEvent 2.0 packet.  The converters are compiled from the schema's ``"xml"`` field annotations,
so the schema is the one description of the data model.

Packets come from the internet: lxml parses them with entities, DTDs and the network turned off,
a document with a DTD is refused outright, and each packet has a size limit.  lxml is imported
here only, and only when a packet is read or written (``kcp --help`` stays light).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from ...errors import BadInput
from ...message import Message
from ...options import Options
from .documents import CHUNK, split_documents
from .mapping import CUTOUT_POLICIES, DEFAULT_AUTHORITY, DEFAULT_CUTOUTS, AlertMapper
from .model import voevent_schema
from .packet import hardened_parser, is_voevent_record, parse_xml, read_packet, write_packet

__all__ = [
    "CUTOUT_POLICIES", "DEFAULT_AUTHORITY", "DEFAULT_CUTOUTS", "AlertMapper", "VoeventReader",
    "VoeventWriter", "cut_torn_document",
    "hardened_parser", "read_packet", "split_documents", "voevent_schema", "write_packet",
]


# -- the format ---------------------------------------------------------------------------------
class VoeventReader:
    """VOEvent packets: one per payload; files and streams hold one or several."""

    def __init__(self, options: Options) -> None:
        self.limit = options.max_xml_bytes
        self.parser = hardened_parser()

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a VOEvent packet was expected")
        schema = voevent_schema()
        # read_stream parsed it already, to refuse bad packets even when bytes pass untouched.
        if message.datum is None or message.schema is not schema:
            message.datum = self._read(message.value)
            message.schema = schema
        message.decoded = True
        return [message]

    def _read(self, data: bytes) -> dict[str, Any]:
        if len(data) > self.limit:
            raise self._too_big()
        return read_packet(data, self.parser)

    def _too_big(self) -> BadInput:
        return BadInput(f"packet is over the limit of {self.limit:,} bytes (--max-xml-bytes)")

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        # Messages stay undecoded (bytes go to Kafka as they are) but carry their parsed record,
        # which decode() then uses.
        for data, number, last in split_documents(stream, self.limit):
            position = None if number == 1 and last else f"document {number}"
            message = Message(value=data, source=source, position=position)
            try:
                if data is None:
                    raise self._too_big()
                message.datum = self._read(data)
                message.schema = voevent_schema()
            except BadInput as exc:
                message.error = exc.at(message.where())
            yield message


class VoeventWriter:
    """VOEvent records as the packets they were read from; other alerts mapped onto VOEvent."""

    def __init__(self, options: Options) -> None:
        self.map_alert = AlertMapper(options.authority or DEFAULT_AUTHORITY,
                                     options.cutouts or DEFAULT_CUTOUTS)
        self.parser = hardened_parser()

    def encode(self, message: Message) -> bytes:
        if message.datum is None:
            raise BadInput("no record to write as VOEvent (a tombstone?)")
        record = message.datum
        if not is_voevent_record(message):
            record = self.map_alert(record, message.schema)
        return write_packet(record, self.parser)

    def recover(self, stream: BinaryIO) -> None:
        cut_torn_document(stream, self.parser)

    def open_stream(self, stream: BinaryIO) -> VoeventStreamWriter:
        return VoeventStreamWriter(stream, self)


class VoeventStreamWriter:
    """Documents one after the other, each starting with its XML declaration on a new line."""

    encodes_alone = True

    def __init__(self, stream: BinaryIO, owner: VoeventWriter) -> None:
        self.stream = stream
        self.encode = owner.encode

    def write(self, message: Message) -> None:
        self.write_encoded(self.encode(message))

    def write_encoded(self, data: bytes) -> None:
        self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def cut_torn_document(stream: BinaryIO, parser: Any) -> None:
    """Truncate a stream of documents after its last complete one (a crashed writer's tail)."""
    size = stream.seek(0, 2)
    marker = b"\n<?xml"
    # Every document kcp writes starts a line with its declaration: find the last one.
    start = 0
    position = size
    while position > 0:
        window_start = max(0, position - CHUNK)
        stream.seek(window_start)
        window = stream.read(min(size, position + len(marker)) - window_start)
        found = window.rfind(marker)
        if found >= 0:
            start = window_start + found + 1
            break
        position = window_start
    stream.seek(start)
    try:
        parse_xml(stream.read(), parser)
        end = size
    except BadInput:
        end = start
    stream.truncate(end)
    stream.seek(end)
