"""The Avro framings alert streams use, read and written for single payloads.

- ``ocf``: an Avro Object Container File per message (ZTF: the full schema in every message);
- ``confluent``: ``0x00``, a 4-byte big-endian registry id, a schemaless body (Rubin);
- ``single-object``: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint, a body;
- ``schemaless``: a bare body, the schema given by the user (Fink, ZTF's 2017 samples).

OCF headers are parsed here rather than by ``fastavro.reader`` so that the schema text is looked
up in the :class:`SchemaStore` and parsed only the first time it is seen.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import fastavro

from ..errors import BadInput, UsageError
from .schemas import Schema, SchemaStore, unreadable_field

OCF_MAGIC = b"Obj\x01"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
FRAMINGS = ("ocf", "confluent", "single-object", "schemaless")
_CONFLUENT_HEADER = struct.Struct(">bI")
_FINGERPRINT = struct.Struct("<Q")


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the zig-zag varint at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        try:
            byte = buf[pos]
        except IndexError:
            raise BadInput("truncated: a varint runs past the end of the payload") from None
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise BadInput("malformed varint (longer than 10 bytes)")


def write_long(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decompress_snappy(data: bytes) -> bytes:
    import cramjam

    # Avro appends a 4-byte CRC32 of the uncompressed data to each snappy block.
    return bytes(cramjam.snappy.decompress_raw(data[:-4]))


def _decompress_zstd(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.zstd.decompress(data))


BLOCK_DECOMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {
    b"null": bytes,
    b"deflate": lambda data: zlib.decompress(data, -15),
    b"snappy": _decompress_snappy,
    b"zstandard": _decompress_zstd,
}


def parse_ocf_header(payload: bytes, store: SchemaStore) -> tuple[Schema, bytes, bytes, int]:
    """Return (writer schema, codec, sync marker, position of the first block)."""
    pos = 4
    meta: dict[bytes, bytes] = {}
    while True:
        count, pos = read_long(payload, pos)
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's size in bytes
            count = -count
            _, pos = read_long(payload, pos)
        for _ in range(count):
            klen, pos = read_long(payload, pos)
            key = payload[pos:pos + klen]
            pos += klen
            vlen, pos = read_long(payload, pos)
            meta[key] = payload[pos:pos + vlen]
            pos += vlen
    sync = payload[pos:pos + 16]
    if len(sync) != 16:
        raise BadInput("truncated OCF header")
    text = meta.get(b"avro.schema")
    if text is None:
        raise BadInput("OCF header has no avro.schema")
    return store.from_header_text(text), meta.get(b"avro.codec", b"null"), sync, pos + 16


def block_decompressor(codec: bytes) -> Callable[[bytes], bytes]:
    """The function turning an OCF block of ``codec`` into its records' bytes."""
    decompress = BLOCK_DECOMPRESSORS.get(codec)
    if decompress is None:
        raise BadInput(f"unsupported OCF codec {codec.decode(errors='replace')!r}")
    if codec == b"null":
        return bytes

    def checked(block: bytes) -> bytes:
        try:
            return decompress(block)
        except Exception as exc:
            raise BadInput(f"cannot decompress {codec.decode()} OCF block: {exc}") from None

    return checked


def iter_ocf_blocks(payload: bytes, codec: bytes, sync: bytes, pos: int):
    """Yield (record count, block bytes) of each block, checking every sync marker."""
    decompress = block_decompressor(codec)
    end = len(payload)
    while pos < end:
        count, pos = read_long(payload, pos)
        size, pos = read_long(payload, pos)
        if count < 0 or size < 0 or pos + size + 16 > end:
            raise BadInput(f"corrupt or truncated OCF block at byte {pos}")
        block = payload[pos:pos + size]
        pos += size
        if payload[pos:pos + 16] != sync:
            raise BadInput(f"OCF sync marker not found at byte {pos}")
        pos += 16
        yield count, decompress(block)


def read_body(body: io.BytesIO | bytes, writer: Schema, reader: Schema | None) -> Any:
    """Decode one schemaless datum, resolved into ``reader`` when given."""
    fo = body if isinstance(body, io.BytesIO) else io.BytesIO(body)
    try:
        if reader is None or reader is writer:
            return fastavro.schemaless_reader(fo, writer.parsed, None)
        return fastavro.schemaless_reader(fo, writer.parsed, reader.parsed)
    except (EOFError, StopIteration):
        raise BadInput("truncated Avro datum") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"invalid UTF-8 in an Avro string: {exc.reason}") from None
    except fastavro.read.SchemaResolutionError as exc:
        field = unreadable_field(writer, reader)
        at = f" (field {field})" if field else ""
        detail = str(exc) if len(str(exc)) <= 200 else f"{str(exc)[:197]}..."  # may hold a schema
        raise BadInput(f"writer schema {writer.name} cannot be read as {reader.name}{at}: "
                       f"{detail}") from None
    except (IndexError, ValueError, KeyError, TypeError, OverflowError, MemoryError) as exc:
        raise BadInput(f"corrupt Avro datum ({type(exc).__name__}: {exc})") from None


# Reads ``count`` records that fill ``body`` exactly, written with ``writer``: fastavro's
# datums (:func:`datum_reader`) or finished JSON documents (:class:`kcp.codec.native.NativeJson`).
BodyReader = Callable[[bytes, int, Schema], list[Any]]


def left_over(size: int, writer: Schema) -> str:
    return (f"{size} bytes left over after the datum (wrong schema {writer.name}, or not this "
            "framing)")


def datum_reader(store: SchemaStore) -> BodyReader:
    """fastavro's datums, resolved into the store's reader schema when it has one."""

    def read(body: bytes, count: int, writer: Schema) -> list[Any]:
        fo = io.BytesIO(body)
        datums = [read_body(fo, writer, store.reader) for _ in range(count)]
        if fo.tell() != len(body):
            raise BadInput(left_over(len(body) - fo.tell(), writer))
        return datums

    return read


def decode_ocf(payload: bytes, store: SchemaStore, read: BodyReader) -> list[tuple[Any, Schema]]:
    writer, codec, sync, pos = parse_ocf_header(payload, store)
    schema = store.reader or writer
    return [(value, schema) for count, data in iter_ocf_blocks(payload, codec, sync, pos)
            for value in read(data, count, writer)]


def decode_confluent(payload: bytes, store: SchemaStore, read: BodyReader
                     ) -> list[tuple[Any, Schema]]:
    if len(payload) < 5:
        raise BadInput("truncated Confluent frame (shorter than its 5-byte header)")
    _, schema_id = _CONFLUENT_HEADER.unpack_from(payload)
    writer = store.by_id(schema_id) or store.default
    if writer is None:
        raise BadInput(f"unknown schema id {schema_id} in a Confluent frame: no schema source "
                       "knows it (give --registry URL, --schema FILE or --schema-dir DIR)")
    return [(value, store.reader or writer) for value in read(payload[5:], 1, writer)]


def decode_single_object(payload: bytes, store: SchemaStore, read: BodyReader
                         ) -> list[tuple[Any, Schema]]:
    if len(payload) < 10:
        raise BadInput("truncated single-object frame (shorter than its 10-byte header)")
    (value,) = _FINGERPRINT.unpack_from(payload, 2)
    writer = store.by_fingerprint(value)
    if writer is None:
        raise BadInput(f"single-object frame has fingerprint {value:016x}, which matches no "
                       "known schema (give --schema FILE)")
    return [(datum, store.reader or writer) for datum in read(payload[10:], 1, writer)]


def decode_schemaless(payload: bytes, store: SchemaStore, read: BodyReader
                      ) -> list[tuple[Any, Schema]]:
    writer = store.default
    if writer is None:
        raise UsageError("schemaless Avro needs its schema: give --schema FILE")
    return [(value, store.reader or writer) for value in read(payload, 1, writer)]


DECODERS = {
    "ocf": decode_ocf,
    "confluent": decode_confluent,
    "single-object": decode_single_object,
    "schemaless": decode_schemaless,
}


def detect_framing(payload: bytes, store: SchemaStore) -> str:
    """The framing ``payload`` is in, from its leading bytes and the schemas at hand."""
    if payload[:4] == OCF_MAGIC:
        return "ocf"
    if payload[:2] == SINGLE_OBJECT_MAGIC and len(payload) >= 10:
        if store.by_fingerprint(_FINGERPRINT.unpack_from(payload, 2)[0]) is not None:
            return "single-object"
        if store.default is None:
            return "single-object"
    if payload[:1] == CONFLUENT_MAGIC and len(payload) >= 5:
        schema_id = _CONFLUENT_HEADER.unpack_from(payload)[1]
        # A schemaless body may start with 0x00 too: a frame is only assumed when its id is
        # known, or when there is no user schema to read a bare body with.
        if store.by_id(schema_id) is not None or store.default is None:
            return "confluent"
    if store.default is not None:
        return "schemaless"
    head = payload[:16].hex(" ")
    raise BadInput(f"payload matches no Avro framing (first bytes: {head}; tried "
                   f"{', '.join(FRAMINGS)}); give --from FORMAT, or --schema for schemaless Avro")


def decode_payload(payload: bytes, store: SchemaStore, framing: str | None = None,
                   read: BodyReader | None = None) -> list[tuple[Any, Schema]]:
    """Every (datum, schema) a payload holds, in the given framing or the detected one;
    ``read`` reads the bodies (fastavro's datums by default)."""
    read = read or datum_reader(store)
    if framing is None:
        framing = detect_framing(payload, store)
        if framing == "schemaless" and payload[:1] == CONFLUENT_MAGIC and len(payload) >= 5:
            # 0x00 starts many bare bodies and every Confluent frame, also one whose id no source
            # knows but whose schema the user gave (Rubin with --schema): the exact reading wins.
            try:
                return decode_schemaless(payload, store, read)
            except BadInput as exc:
                try:
                    return decode_confluent(payload, store, read)
                except BadInput:
                    raise exc from None
    return DECODERS[framing](payload, store, read)


def write_body(datum: Any, schema: Schema) -> bytes:
    fo = io.BytesIO()
    try:
        fastavro.schemaless_writer(fo, schema.parsed, datum)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise BadInput(f"record does not match schema {schema.name}: {exc}") from None
    return fo.getvalue()


class OcfMessageEncoder:
    """Writes one OCF per message, reusing each schema's header bytes."""

    def __init__(self) -> None:
        # Keyed by the Schema itself, not id(): a freed schema's id can be reused by another one.
        self._headers: dict[Schema, tuple[bytes, bytes]] = {}

    def header(self, schema: Schema) -> tuple[bytes, bytes]:
        cached = self._headers.get(schema)
        if cached is None:
            sync = os.urandom(16)
            cached = (ocf_header(schema, b"null", sync), sync)
            self._headers[schema] = cached
        return cached

    def __call__(self, datum: Any, schema: Schema) -> bytes:
        header, sync = self.header(schema)
        body = write_body(datum, schema)
        return b"".join((header, write_long(1), write_long(len(body)), body, sync))


def ocf_header(schema: Schema, codec: bytes, sync: bytes) -> bytes:
    text = schema.text.encode()
    return b"".join((OCF_MAGIC, write_long(2),
                     write_long(11), b"avro.schema", write_long(len(text)), text,
                     write_long(10), b"avro.codec", write_long(len(codec)), codec,
                     write_long(0), sync))


def encode_confluent(datum: Any, schema: Schema) -> bytes:
    if schema.registry_id is None:
        raise UsageError(f"Confluent framing needs a registry id for schema {schema.name}: "
                         "give --schema-id N (Rubin: major*100+minor)")
    return _CONFLUENT_HEADER.pack(0, schema.registry_id) + write_body(datum, schema)


def encode_single_object(datum: Any, schema: Schema) -> bytes:
    return SINGLE_OBJECT_MAGIC + _FINGERPRINT.pack(schema.fingerprint) + write_body(datum, schema)


def encoder_for(framing: str) -> Callable[[Any, Schema], bytes]:
    """A function encoding (datum, schema) into one payload of ``framing``."""
    if framing == "ocf":
        return OcfMessageEncoder()
    return {"confluent": encode_confluent, "single-object": encode_single_object,
            "schemaless": write_body}[framing]


class OcfStream:
    """An OCF read from a stream (a file, stdin) block by block, without decoding records.

    ``header`` holds the file's header bytes: a block of one record behind that header is a
    complete OCF, the payload ZTF sends per alert.
    """

    def __init__(self, stream: Any, store: SchemaStore) -> None:
        self.stream = stream
        self._pending = b""
        want = 1 << 16
        while True:
            self._pending += stream.read(want - len(self._pending))
            try:
                self.schema, self.codec, self.sync, end = parse_ocf_header(self._pending, store)
                break
            except BadInput:
                if len(self._pending) < want:  # the stream ended inside the header
                    raise
                want *= 4
        self.header = self._pending[:end]
        self._pending = self._pending[end:]

    def _read(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            if len(data) < size:
                data += self.stream.read(size - len(data))
            return data
        return self.stream.read(size)

    def _read_long(self) -> int | None:
        raw = bytearray()
        while True:
            byte = self._read(1)
            if not byte:
                if raw:
                    raise BadInput("truncated OCF block header")
                return None
            raw += byte
            if not byte[0] & 0x80:
                return read_long(bytes(raw), 0)[0]
            if len(raw) > 10:
                raise BadInput("malformed varint in an OCF block header")

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """(record count, raw block bytes as stored) of each block, sync markers checked after
        the block is taken (as fastavro does: a block's records come before that error)."""
        while True:
            count = self._read_long()
            if count is None:
                return
            size = self._read_long()
            if size is None or count < 0 or size < 0:
                raise BadInput("corrupt OCF block header")
            data = self._read(size)
            if len(data) != size:
                raise BadInput("truncated OCF block")
            yield count, data
            if self._read(16) != self.sync:
                raise BadInput("OCF sync marker not found after a block")

    def payload(self, data: bytes) -> bytes:
        """A one-record block as a complete OCF of its own."""
        return b"".join((self.header, write_long(1), write_long(len(data)), data, self.sync))
