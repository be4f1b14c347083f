"""Avro: OCF files with many records, and payloads in every framing (see kcp.codec.framing)."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import fastavro
import fastavro._write
import fastavro._write_py
import fastavro.read

from ..codec import Schema, SchemaStore, decode_payload, encoder_for
from ..codec.framing import (
    OCF_MAGIC,
    DatumReader,
    OcfStream,
    block_inflater,
    compress_zstd,
    parse_ocf_header,
    read_block,
    read_long,
    write_long,
)
from ..codec.native import json_transcoder
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options
from ..stages import field_tree
from .lines import read_whole


def _write_zstandard_block(out: Any, data: bytes, level: int | None) -> None:
    compressed = compress_zstd(data)
    # fastavro's compiled writer passes the file, its pure-Python fallback an encoder.
    if hasattr(out, "write_long"):
        out.write_long(len(compressed))
        out._fo.write(compressed)
    else:
        out.write(write_long(len(compressed)))
        out.write(compressed)


# fastavro writes zstandard blocks only when backports.zstd is installed; cramjam, which kcp
# needs anyway (kcp.codec.framing handles zstandard payloads with it), does the job.
fastavro._write.BLOCK_WRITERS["zstandard"] = _write_zstandard_block
fastavro._write_py.BLOCK_WRITERS["zstandard"] = _write_zstandard_block


class AvroReader:
    framing: str | None = None

    def __init__(self, options: Options) -> None:
        self.schemas = options.schemas
        self.keep_payloads = options.keep_payloads
        # Finished JSON documents when that is all the run needs (kcp.codec.native), else datums;
        # with --fields, documents of what it keeps.
        self.documents = json_transcoder(
            options, field_tree(options.fields) if options.fields else None)
        self.read_bodies = self.documents or DatumReader(self.schemas)

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where an Avro record was expected")
        records = decode_payload(message.value, self.schemas, self.framing, self.read_bodies)
        if len(records) == 1:
            message.datum, message.schema = records[0]
            message.decoded = True
            return [message]
        return [_record_of(message, datum, schema, str(number))
                for number, (datum, schema) in enumerate(records, 1)]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
        if head == OCF_MAGIC and self.keep_payloads:
            yield from self._read_ocf_payloads(stream, source)
            return
        if head == OCF_MAGIC and self.documents is not None:
            yield from self._read_ocf_documents(stream, source)
            return
        if head == OCF_MAGIC or (not head and self.framing in (None, "ocf")):
            yield from self._read_ocf_file(stream, source)
            return
        # Not an OCF: the whole file is one payload (a schemaless datum or a framed message).
        yield from read_whole(self.decode, stream, source, self.schemas.limits.max_line_bytes)

    def _read_ocf_payloads(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        """Records as one-OCF payloads, cut from single-record blocks without decoding them."""
        number = 0
        try:
            ocf = OcfStream(stream, self.schemas)
            for count, data in ocf.blocks():
                payload = ocf.payload(data) if count == 1 else ocf.header + write_long(
                    count) + write_long(len(data)) + data + ocf.sync
                message = Message(value=payload, source=source, position=f"record {number + 1}")
                number += count
                if count == 1:
                    yield message
                else:
                    yield from self.decode(message)
        except BadInput as exc:
            yield _bad_record(source, number, exc)

    def _read_ocf_documents(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        """An OCF file's records as JSON documents (kcp.codec.native), block by block, with the
        records and the errors of the Python path (``_read_ocf_file``)."""
        assert self.documents is not None
        number = 0
        try:
            ocf = OcfStream(stream, self.schemas)
            inflated = block_inflater(ocf.codec, ocf.limits)
            for count, data in ocf.blocks():
                block = inflated(data)
                python = functools.partial(read_block, count, block, ocf.schema, None, ocf.limits)
                for document in self.documents.file_block(block, count, ocf.schema, python):
                    number += 1
                    yield Message(datum=document, schema=ocf.schema, decoded=True, source=source,
                                  position=f"record {number}")
        except BadInput as exc:
            yield _bad_record(source, number, exc)

    def _read_ocf_file(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        # Read block by block here, not by fastavro.reader: each block's inflated size, record
        # count and (for schemas that need it) nesting are checked first (kcp.codec.limits).
        number = 0
        try:
            ocf = OcfStream(stream, self.schemas)
            schema = self.schemas.reader or ocf.schema
            for datum in ocf.records(self.schemas.reader):
                number += 1
                yield Message(datum=datum, schema=schema, decoded=True, source=source,
                              position=f"record {number}")
        except BadInput as exc:
            # Nothing after a corrupt block can be trusted: report it, end this file.
            yield _bad_record(source, number, exc)


def _bad_record(source: str, good: int, error: BadInput) -> Message:
    """The message reporting ``error`` after ``good`` records of an OCF read well."""
    position = f"record {good + 1}"
    return Message(source=source, position=position, error=error.at(f"{source}:{position}"))


def _record_of(message: Message, datum: Any, schema: Schema, record: str) -> Message:
    return Message(value=None, key=message.key, headers=message.headers, topic=message.topic,
                   partition=message.partition, offset=message.offset,
                   timestamp=message.timestamp, source=message.source,
                   position=message.position, datum=datum, schema=schema, decoded=True,
                   record=record)


class AvroWriter:
    framing = "ocf"

    def __init__(self, options: Options) -> None:
        self.schemas = options.schemas
        # The schema of the file a resumed copy continues (set by ``recover``)
        self.continued: Schema | None = None
        self.codec = options.codec or "null"
        self._encode: Callable[[Any, Schema], bytes] = encoder_for(self.framing, self.codec)

    def schema_of(self, message: Message) -> Schema:
        """The schema ``message`` is written with (--reader-schema, its own, or --schema)."""
        default = self.schemas.default
        if (default is not None and message.schema is not None
                and message.schema.fingerprint == default.fingerprint):
            return default  # the same schema, with the registry id --schema-id gave it
        schema = self.schemas.reader or message.schema or default
        if schema is None:
            raise BadInput("writing Avro needs a schema for records read as plain JSON: "
                             "give --schema FILE")
        if (self.framing == "confluent" and schema.registry_id is None and default is not None
                and default.registry_id is not None):
            raise BadInput(f"the record's schema {schema.name} is not schema id "
                           f"{default.registry_id} ({default.name})")
        return schema

    def datum_of(self, message: Message, schema: Schema) -> Any:
        """``message``'s datum as Avro of ``schema`` (plain JSON records mapped onto it)."""
        if message.schema is None and schema is not None and message.datum is not None:
            from ..codec import JsonToAvro

            return JsonToAvro().datum(message.datum, schema)
        return message.datum

    def encode(self, message: Message) -> bytes:
        schema = self.schema_of(message)
        return self._encode(self.datum_of(message, schema), schema)

    def recover(self, stream: BinaryIO) -> None:
        cut_torn_ocf_tail(stream)
        if stream.tell():
            stream.seek(0)
            text = fastavro.reader(stream).metadata["avro.schema"]
            self.continued = self.schemas.from_header_text(text.encode())
            stream.seek(0, 2)

    def open_stream(self, stream: BinaryIO) -> OcfStreamWriter:
        if self.framing != "ocf":
            raise UsageError(f"files hold Avro as container files; --to {self.framing} is for "
                             "Kafka payloads (write .avro with --to avro)")
        return OcfStreamWriter(stream, self)


class _WriteOnly(io.RawIOBase):
    """A stream as fastavro sees it when kcp starts a new file: not seekable, so fastavro never
    looks for a header to append to (and a pipe is never asked where it is)."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.stream.write(data)
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


class OcfStreamWriter:
    """An OCF file with one header and many records; all records share the first one's schema.

    Its blocks hold many records under one header, so records cannot be encoded on their own.
    """

    encodes_alone = False

    def __init__(self, stream: BinaryIO, owner: AvroWriter) -> None:
        self.stream = stream
        self.owner = owner
        self.schema: Schema | None = owner.continued
        self.writer: fastavro.write.Writer | None = None

    def write(self, message: Message) -> None:
        schema = self.owner.schema_of(message)
        if self.writer is None:
            if self.schema is None:
                self.schema = schema
                target: Any = _WriteOnly(self.stream)
            else:  # a recovered file, positioned at its end: fastavro appends to it
                target = self.stream
            self.writer = fastavro.write.Writer(target, self.schema.parsed,
                                                codec=self.owner.codec)
        assert self.schema is not None
        if schema is not self.schema and schema.fingerprint != self.schema.fingerprint:
            raise BadInput(f"record has schema {schema.name} ({schema.fingerprint:016x}) but this "
                           f"file holds {self.schema.name} ({self.schema.fingerprint:016x}); "
                           "give --reader-schema to write them all in one shape")
        try:
            self.writer.write(self.owner.datum_of(message, schema))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise BadInput(f"record does not match schema {schema.name}: {exc}") from None
        except RecursionError:
            raise BadInput(f"record nested too deeply to write as {schema.name}") from None

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        self.stream.flush()

    def close(self) -> None:
        self.flush()


def cut_torn_ocf_tail(stream: BinaryIO) -> None:
    """Truncate an OCF file after its last complete block (a crashed writer's leftovers).

    A file whose header is incomplete is emptied. Reads the file as a stream: only the header
    and each block's length and sync marker are read, never the records.
    """
    size = stream.seek(0, 2)
    good_end = 0
    header_size = 1 << 16
    while True:
        stream.seek(0)
        head = stream.read(header_size)
        try:
            _, _, sync, good_end = parse_ocf_header(head, SchemaStore())
            break
        except BadInput:
            if header_size >= size:
                good_end = 0
                break
            header_size *= 4
    while good_end and good_end < size:
        stream.seek(good_end)
        prefix = stream.read(20)
        try:
            _, pos = read_long(prefix, 0)
            length, pos = read_long(prefix, pos)
        except BadInput:
            break
        block_end = good_end + pos + length + 16
        if length < 0 or block_end > size:
            break
        stream.seek(block_end - 16)
        if stream.read(16) != sync:
            break
        good_end = block_end
    stream.truncate(good_end)
    stream.seek(good_end)


def framed(framing: str) -> tuple[type, type]:
    """The Reader and Writer classes of Avro with one forced framing."""
    reader = type(f"{framing.title()}Reader", (AvroReader,), {"framing": framing})
    writer = type(f"{framing.title()}Writer", (AvroWriter,), {"framing": framing})
    return reader, writer
