"""Every payload and file format kcp reads and writes: one Reader/Writer pair each, in FORMATS.

A Reader turns a payload into decoded messages (``decode``) and a file into messages
(``read_stream``); a Writer turns a decoded message into a payload (``encode``) and opens a
stream writer for files (``open_stream``).  Adding a format is one module and one line below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

from ..contracts import Encode, Reader, Writer
from ..errors import UsageError
from ..message import Message
from ..options import Options
from . import avro, envelope, fits, gcn_text, json, parquet, raw, template, voevent
from .lines import as_text


@dataclass(frozen=True)
class Format:
    name: str
    reader: Callable[[Options], Reader]
    writer: Callable[[Options], Writer]
    extensions: tuple[str, ...]  # of the files holding it: what an address's path is read as


FORMATS: dict[str, Format] = {f.name: f for f in (
    # Avro: OCF files; payloads in any framing (detected), written as one OCF each
    Format("avro", avro.AvroReader, avro.AvroWriter, (".avro",)),
    # Avro, one Object Container File per payload (as ZTF sends alerts)
    Format("ocf", *avro.framed("ocf"), ()),
    # Avro in the Confluent wire format: 0x00, 4-byte schema id, body (as Rubin sends)
    Format("confluent", *avro.framed("confluent"), ()),
    # Avro single-object encoding: C3 01, 8-byte fingerprint, body
    Format("single-object", *avro.framed("single-object"), ()),
    # a bare Avro body; the schema comes from --schema
    Format("schemaless", *avro.framed("schemaless"), ()),
    # JSON Lines, one document per record (docs/json-mapping.md for the Avro mapping)
    Format("json", json.JsonReader, json.JsonWriter, (".json", ".jsonl", ".ndjson")),
    # JSON Lines of whole Kafka messages: topic, partition, offset, timestamp, key, headers,
    # the decoded value and the exact payload
    Format("envelope", envelope.EnvelopeReader, envelope.EnvelopeWriter, ()),
    # one alert per FITS file: header, tables, cutout images; read back losslessly
    Format("fits", fits.FitsReader, fits.FitsWriter, (".fits",)),
    # VOEvent XML packets, read into a typed record and written back as they were; other
    # alerts are mapped onto VOEvent 2.0 (docs/voevent.md)
    Format("voevent", voevent.VoeventReader, voevent.VoeventWriter, (".xml",)),
    # Parquet (pyarrow): the Avro schema in the file, records as structs, row groups streamed;
    # lossless both ways (docs/parquet.md)
    Format("parquet", parquet.ParquetReader, parquet.ParquetWriter, (".parquet",)),
    # payloads as they are, one per line (--delimiter); no decoding
    # GCN's classic text notices (KEY: value lines) as records of their fields, and back
    Format("gcn-text", gcn_text.GcnTextReader, gcn_text.GcnTextWriter, ()),
    Format("raw", raw.RawReader, raw.RawWriter, ()),
    # one line per record shaped by -F/--format-template, like kcat -f (output only)
    Format("template", template.TemplateReader, template.TemplateWriter, ()),
)}


def format_named(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None


def format_for_path(path: str) -> Format | None:
    """The format a file name's extension implies, ignoring a trailing ``.gz``."""
    suffixes = [s.lower() for s in PurePath(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if not suffixes:
        return None
    for fmt in FORMATS.values():
        if suffixes[-1] in fmt.extensions:
            return fmt
    return None


def sniff_format(head: bytes) -> Format:
    """The format of a stream, from its first bytes."""
    if head.startswith(parquet.MAGIC):
        return FORMATS["parquet"]
    # UTF-16 and UTF-32 byte order marks: only XML declares such an encoding (lxml reads it).
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or head[:2] in (b"\xff\xfe",
                                                                           b"\xfe\xff"):
        return FORMATS["voevent"]
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if stripped[:1] in (b"{", b"["):
        return FORMATS["json"]
    if stripped[:1] == b"<":  # "<?xml" or a root element: VOEvent is kcp's XML format
        return FORMATS["voevent"]
    return FORMATS["avro"]


class AutoReader:
    """Reads payloads whose format is not given: JSON if they look like it, else Avro; for
    eyes on a terminal (``options.show_text``), plain text as that text."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.readers: dict[str, Reader] = {}

    def _reader(self, fmt: Format) -> Reader:
        reader = self.readers.get(fmt.name)
        if reader is None:
            reader = self.readers[fmt.name] = fmt.reader(self.options)
        return reader

    def decode(self, message: Message) -> list[Message]:
        found = sniff_format((message.value or b"")[:16])
        # Avro framings start with bytes text never holds; a bare Avro body needs --schema.
        if (found.name == "avro" and self.options.show_text
                and self.options.schemas.default is None
                and (text := as_text(message.value or b"")) is not None):
            message.datum, message.decoded = text, True
            return [message]
        return self._reader(found).decode(message)

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        head = stream.peek(64)[:64]  # type: ignore[attr-defined]  (sources hand peekable ones)
        return self._reader(sniff_format(head)).read_stream(stream, source)


def reader_for(name: str | None, options: Options) -> Reader:
    """The payload reader for ``--from NAME``, or one that detects the format."""
    return format_named(name).reader(options) if name else AutoReader(options)


def payload_encoder(options: Options) -> Encode:
    """Message -> Kafka payload: ``--to`` if given; else the payload as read when the record is
    unchanged, and one Avro OCF per record otherwise (what ZTF sends)."""
    if options.write_format:
        return format_named(options.write_format).writer(options).encode
    avro_writer = FORMATS["avro"].writer(options)
    reshaped = options.schemas.reader is not None or options.fields is not None

    def encode(message: Message) -> bytes:
        # A payload read from Kafka, an envelope or raw input passes as it was; records read
        # from files (JSON lines, OCF records) are encoded.
        if message.value is not None and not reshaped and (
                not message.decoded or message.topic is not None):
            return message.value
        return avro_writer.encode(message)

    return encode


def file_extensions() -> tuple[str, ...]:
    """Every extension that makes an address a path: the formats', compressed or archived."""
    return (*(e for fmt in FORMATS.values() for e in fmt.extensions),
            ".gz", ".bz2", ".xz", ".tar", ".tgz")
