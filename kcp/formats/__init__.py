"""Every payload and file format kcp reads and writes: one Reader/Writer pair each, in FORMATS.

A Reader turns a payload into decoded messages (``decode``) and a file into messages
(``read_stream``); a Writer turns a decoded message into a payload (``encode``) and opens a
stream writer for files (``open_stream``).  Adding a format is one module and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ..errors import UsageError
from . import avro, envelope, fits, json, parquet, raw, voevent


@dataclass(frozen=True)
class Format:
    name: str
    reader: Any
    writer: Any
    extensions: tuple[str, ...]
    summary: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("avro", avro.AvroReader, avro.AvroWriter, (".avro",),
           "Avro: OCF files; payloads in any framing (detected), written as one OCF each"),
    Format("ocf", *avro.framed("ocf"), (),
           "Avro, one Object Container File per payload (as ZTF sends alerts)"),
    Format("confluent", *avro.framed("confluent"), (),
           "Avro in the Confluent wire format: 0x00, 4-byte schema id, body (as Rubin sends)"),
    Format("single-object", *avro.framed("single-object"), (),
           "Avro single-object encoding: C3 01, 8-byte fingerprint, body"),
    Format("schemaless", *avro.framed("schemaless"), (),
           "a bare Avro body; the schema comes from --schema"),
    Format("json", json.JsonReader, json.JsonWriter, (".json", ".jsonl", ".ndjson"),
           "JSON Lines, one document per record (see docs for the Avro mapping)"),
    Format("envelope", envelope.EnvelopeReader, envelope.EnvelopeWriter, (),
           "JSON Lines of whole Kafka messages: topic, partition, offset, timestamp, key, "
           "headers, the decoded value and the exact payload"),
    Format("fits", fits.FitsReader, fits.FitsWriter, (".fits",),
           "one alert per FITS file: header, tables, cutout images; read back losslessly"),
    Format("voevent", voevent.VoeventReader, voevent.VoeventWriter, (".xml",),
           "VOEvent XML packets, read into a typed record and written back as they were; "
           "other alerts are mapped onto VOEvent 2.0 (docs/voevent.md)"),
    Format("parquet", parquet.ParquetReader, parquet.ParquetWriter, (".parquet",),
           "Parquet (pyarrow): the Avro schema in the file, records as structs, row groups "
           "streamed; lossless both ways"),
    Format("raw", raw.RawReader, raw.RawWriter, (),
           "payloads as they are, one per line (--delimiter); no decoding"),
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
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if stripped[:1] in (b"{", b"["):
        return FORMATS["json"]
    if stripped[:1] == b"<":  # "<?xml" or a root element: VOEvent is kcp's XML format
        return FORMATS["voevent"]
    return FORMATS["avro"]


class AutoReader:
    """Reads payloads whose format is not given: JSON if they look like it, else Avro."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.readers: dict[str, Any] = {}

    def _reader(self, fmt: Format) -> Any:
        reader = self.readers.get(fmt.name)
        if reader is None:
            reader = self.readers[fmt.name] = fmt.reader(self.options)
        return reader

    def decode(self, message: Any) -> list:
        return self._reader(sniff_format((message.value or b"")[:16])).decode(message)

    def read_stream(self, stream: Any, source: str) -> Any:
        head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
        return self._reader(sniff_format(head)).read_stream(stream, source)


def reader_for(name: str | None, options: Any) -> Any:
    """The payload reader for ``--from NAME``, or one that detects the format."""
    return format_named(name).reader(options) if name else AutoReader(options)
