"""The Avro framings alert streams use, read and written for single payloads.

- ``ocf``: an Avro Object Container File per message (ZTF: the full schema in every message);
- ``confluent``: ``0x00``, a 4-byte big-endian registry id, a schemaless body (Rubin);
- ``single-object``: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint, a body;
- ``schemaless``: a bare body, the schema given by the user (Fink, ZTF's 2017 samples).

OCF headers are parsed here rather than by ``fastavro.reader`` so that the schema text is looked
up in the :class:`SchemaStore` and parsed only the first time it is seen.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import fastavro

from ..errors import BadInput, UsageError
from .guard import guard_for
from .limits import Limits
from .schemas import FilledSchema, Schema, SchemaStore, resolution_error
from .varint import Truncated, read_long, write_long

OCF_MAGIC = b"Obj\x01"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
FRAMINGS = ("ocf", "confluent", "single-object", "schemaless")
_CONFLUENT_HEADER = struct.Struct(">bI")
_FINGERPRINT = struct.Struct("<Q")


def _too_big(codec: str, limit: int) -> BadInput:
    return BadInput(f"{codec} OCF block inflates past --max-block-size {limit >> 20} MB "
                    "(a decompression bomb?)")


_CHUNK = 16 << 20  # inflated in pieces: a bomb costs the limit, not twice it


def _inflate_deflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(-15)
    pieces, size = [], 0
    while data and not inflater.eof:
        piece = inflater.decompress(data, _CHUNK)
        data = inflater.unconsumed_tail
        size += len(piece)
        if size > limit:
            raise _too_big("deflate", limit)
        pieces.append(piece)
        if not piece:
            break
    return b"".join(pieces)


def _inflate_stdlib(codec: str, decompressor: Callable[[], Any]) -> Callable[[bytes, int], bytes]:
    def inflate(data: bytes, limit: int) -> bytes:
        inflater = decompressor()
        pieces, size = [], 0
        while not inflater.eof:
            piece = inflater.decompress(data, max_length=_CHUNK)
            data = b""
            size += len(piece)
            if size > limit:
                raise _too_big(codec, limit)
            pieces.append(piece)
            if not piece and inflater.needs_input:
                break
        return b"".join(pieces)

    return inflate


def _inflate_snappy(data: bytes, limit: int) -> bytes:
    import cramjam

    # Raw snappy starts with the uncompressed length (a plain varint); Avro appends a 4-byte
    # CRC32 of the uncompressed data to each block.
    size = shift = 0
    for byte in data[:5]:
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if size > limit:
        raise _too_big("snappy", limit)
    return bytes(cramjam.snappy.decompress_raw(data[:-4]))


def _inflate_zstd(data: bytes, limit: int) -> bytes:
    import cramjam

    # A zstandard frame need not declare its size (Java's streaming writer does not), and
    # cramjam has no bounded one-shot call: decompress into growing buffers, at most limit + 1.
    size = min(max(len(data) * 8, 1 << 16), limit + 1)
    out = bytearray()
    while True:
        del out  # the smaller buffer goes before the larger one comes
        out = bytearray(size)
        try:
            written = cramjam.zstd.decompress_into(data, out)
        except cramjam.DecompressionError as exc:
            if "whole buffer" not in str(exc) and "too small" not in str(exc):
                raise
            if size > limit:
                raise _too_big("zstandard", limit) from None
            size = min(size * 4, limit + 1)
            continue
        return bytes(memoryview(out)[:written])


def _compress_snappy(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(data)) + struct.pack(">I", zlib.crc32(data))


def compress_zstd(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.zstd.compress(data))


def _compress_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)  # raw deflate, as the Avro specification says
    return compressor.compress(data) + compressor.flush()


# Each codec inflates a block into at most ``limit`` bytes, or raises BadInput.
BLOCK_DECOMPRESSORS: dict[bytes, Callable[[bytes, int], bytes]] = {
    b"null": lambda data, limit: data,
    b"deflate": _inflate_deflate,
    b"snappy": _inflate_snappy,
    b"zstandard": _inflate_zstd,
    b"bzip2": _inflate_stdlib("bzip2", bz2.BZ2Decompressor),
    b"xz": _inflate_stdlib("xz", lzma.LZMADecompressor),
}
BLOCK_COMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {
    b"null": bytes,
    b"deflate": _compress_deflate,
    b"snappy": _compress_snappy,
    b"zstandard": compress_zstd,
    b"bzip2": bz2.compress,
    b"xz": lzma.compress,
}
# The OCF codecs kcp writes (--codec) and reads.
CODECS = tuple(name.decode() for name in BLOCK_COMPRESSORS)


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
        # Each entry takes at least two bytes, so a huge count soon runs past the end.
        for _ in range(count):
            key, pos = _read_bytes(payload, pos)
            meta[key], pos = _read_bytes(payload, pos)
    sync = payload[pos:pos + 16]
    if len(sync) != 16:
        raise Truncated("truncated OCF header")
    text = meta.get(b"avro.schema")
    if text is None:
        raise BadInput("OCF header has no avro.schema")
    return store.from_header_text(text), meta.get(b"avro.codec", b"null"), sync, pos + 16


def _read_bytes(payload: bytes, pos: int) -> tuple[bytes, int]:
    """The length-prefixed bytes at ``pos`` of an OCF header, and the position after them."""
    length, pos = read_long(payload, pos)
    if length < 0:
        raise BadInput(f"corrupt OCF header (a negative length, {length})")
    if pos + length > len(payload):
        raise Truncated("truncated OCF header")
    return payload[pos:pos + length], pos + length


def block_inflater(codec: bytes, limits: Limits) -> Callable[[bytes], bytes]:
    """The function turning a block of ``codec`` into its bytes, within ``limits``."""
    inflate = BLOCK_DECOMPRESSORS.get(codec)
    if inflate is None:
        raise BadInput(f"unsupported OCF codec {codec.decode(errors='replace')!r}")
    name = codec.decode()

    def inflated(block: bytes) -> bytes:
        try:
            return inflate(block, limits.max_block_bytes)
        except BadInput:
            raise
        except Exception as exc:  # zlib.error, lzma.LZMAError, cramjam's errors, ...
            raise BadInput(f"cannot decompress {name} OCF block: {exc}") from None

    return inflated


def iter_ocf_blocks(payload: bytes, codec: bytes, sync: bytes, pos: int, limits: Limits
                    ) -> Iterator[tuple[int, bytes]]:
    """Yield (record count, block bytes) of each block, checking every sync marker."""
    inflated = block_inflater(codec, limits)
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
        yield count, inflated(block)


def read_block(count: int, data: bytes, writer: Schema, reader: Schema | None, limits: Limits
               ) -> Iterator[Any]:
    """The ``count`` datums of one inflated OCF block, each checked first if its schema needs."""
    guard_for(writer).check_count(count, len(data), limits)
    fo = io.BytesIO(data)
    for _ in range(count):
        yield read_body(fo, writer, reader, limits)
    if fo.tell() != len(data):
        raise BadInput("OCF block holds bytes past its declared records")


def read_body(body: io.BytesIO | bytes, writer: Schema, reader: Schema | None, limits: Limits
              ) -> Any:
    """Decode one schemaless datum, resolved into ``reader`` when given."""
    fo = body if isinstance(body, io.BytesIO) else io.BytesIO(body)
    guard = guard_for(writer)
    if guard.needed:
        with fo.getbuffer() as view:
            guard.skip(view, fo.tell(), limits)
    try:
        if reader is None or reader is writer:
            return fastavro.schemaless_reader(fo, writer.parsed, None)
        datum = fastavro.schemaless_reader(fo, writer.parsed, reader.parsed)
        if isinstance(reader, FilledSchema):
            reader.count(writer)
        return datum
    except (EOFError, StopIteration):
        raise BadInput("truncated Avro datum") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"invalid UTF-8 in an Avro string: {exc.reason}") from None
    except fastavro.read.SchemaResolutionError:
        raise resolution_error(writer, reader) from None
    except MemoryError:
        raise BadInput("corrupt Avro datum (it declares more than memory holds)") from None
    except RecursionError:
        raise BadInput("Avro datum nested too deeply to read") from None
    except (IndexError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise BadInput(f"corrupt Avro datum ({type(exc).__name__}: {exc})") from None


def read_body_exactly(body: bytes, writer: Schema, reader: Schema | None, limits: Limits
                      ) -> Any:
    """Decode a body that must hold one datum and nothing after it."""
    fo = io.BytesIO(body)
    datum = read_body(fo, writer, reader, limits)
    if fo.tell() != len(body):
        raise BadInput(left_over(len(body) - fo.tell(), writer))
    return datum


def left_over(size: int, writer: Schema) -> str:
    return (f"{size} bytes left over after the datum (wrong schema {writer.name}, or not this "
            "framing)")


class BodyReader(Protocol):
    """Reads the records of Avro bodies: fastavro's datums (:class:`DatumReader`) or finished
    JSON documents (:class:`kcp.codec.native.NativeJson`)."""

    def block(self, data: bytes, count: int, writer: Schema) -> list[Any]:
        """The ``count`` records of an inflated OCF block."""

    def exactly(self, body: bytes, writer: Schema) -> list[Any]:
        """The one record of a body that holds nothing else."""


class DatumReader:
    """fastavro's datums, resolved into the store's reader schema, within its limits."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store

    def block(self, data: bytes, count: int, writer: Schema) -> list[Any]:
        return list(read_block(count, data, writer, self.store.reader, self.store.limits))

    def exactly(self, body: bytes, writer: Schema) -> list[Any]:
        return [read_body_exactly(body, writer, self.store.reader, self.store.limits)]


def decode_ocf(payload: bytes, store: SchemaStore, read: BodyReader) -> list[tuple[Any, Schema]]:
    writer, codec, sync, pos = parse_ocf_header(payload, store)
    schema = store.reader or writer
    return [(value, schema)
            for count, data in iter_ocf_blocks(payload, codec, sync, pos, store.limits)
            for value in read.block(data, count, writer)]


def decode_confluent(payload: bytes, store: SchemaStore, read: BodyReader
                     ) -> list[tuple[Any, Schema]]:
    if len(payload) < 5:
        raise BadInput("truncated Confluent frame (shorter than its 5-byte header)")
    _, schema_id = _CONFLUENT_HEADER.unpack_from(payload)
    writer = store.by_id(schema_id) or store.default
    if writer is None:
        raise BadInput(f"unknown schema id {schema_id} in a Confluent frame: no schema source "
                       "knows it (give --registry URL, --schema FILE or --schema-dir DIR)")
    return [(value, store.reader or writer) for value in read.exactly(payload[5:], writer)]


def decode_single_object(payload: bytes, store: SchemaStore, read: BodyReader
                         ) -> list[tuple[Any, Schema]]:
    if len(payload) < 10:
        raise BadInput("truncated single-object frame (shorter than its 10-byte header)")
    (value,) = _FINGERPRINT.unpack_from(payload, 2)
    writer = store.by_fingerprint(value)
    if writer is None:
        raise BadInput(f"single-object frame has fingerprint {value:016x}, which matches no "
                       "known schema (give --schema FILE)")
    return [(value, store.reader or writer) for value in read.exactly(payload[10:], writer)]


def decode_schemaless(payload: bytes, store: SchemaStore, read: BodyReader
                      ) -> list[tuple[Any, Schema]]:
    writer = store.default
    if writer is None:
        raise UsageError("schemaless Avro needs its schema: give --schema FILE")
    return [(value, store.reader or writer) for value in read.exactly(payload, writer)]


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
    read = read or DatumReader(store)
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
    except RecursionError:
        raise BadInput(f"record nested too deeply to write as {schema.name}") from None
    return fo.getvalue()


class OcfMessageEncoder:
    """Writes one OCF per message, reusing each schema's header bytes; ``codec`` compresses
    its block."""

    def __init__(self, codec: str = "null") -> None:
        # Keyed by the Schema itself, not id(): a freed schema's id can be reused by another one.
        self._headers: dict[Schema, tuple[bytes, bytes]] = {}
        self.codec = codec.encode()
        try:
            self.compress = BLOCK_COMPRESSORS[self.codec]
        except KeyError:
            raise UsageError(f"unknown OCF codec {codec!r}; known: {', '.join(CODECS)}") from None

    def header(self, schema: Schema) -> tuple[bytes, bytes]:
        cached = self._headers.get(schema)
        if cached is None:
            sync = os.urandom(16)
            cached = (ocf_header(schema, self.codec, sync), sync)
            self._headers[schema] = cached
        return cached

    def __call__(self, datum: Any, schema: Schema) -> bytes:
        header, sync = self.header(schema)
        body = write_body(datum, schema)
        if self.codec != b"null":
            body = self.compress(body)
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


def encoder_for(framing: str, codec: str = "null") -> Callable[[Any, Schema], bytes]:
    """A function encoding (datum, schema) into one payload of ``framing`` (an OCF's block
    compressed with ``codec``)."""
    if framing == "ocf":
        return OcfMessageEncoder(codec)
    return {"confluent": encode_confluent, "single-object": encode_single_object,
            "schemaless": write_body}[framing]


class OcfStream:
    """An OCF read from a stream (a file, stdin) block by block, without decoding records.

    ``header`` holds the file's header bytes: a block of one record behind that header is a
    complete OCF, the payload ZTF sends per alert.
    """

    def __init__(self, stream: Any, store: SchemaStore) -> None:
        self.stream = stream
        self.limits = store.limits
        self._pending = b""
        want = 1 << 16
        while True:
            self._pending += stream.read(want - len(self._pending))
            try:
                self.schema, self.codec, self.sync, end = parse_ocf_header(self._pending, store)
                break
            except Truncated:
                if len(self._pending) < want:  # the stream ended inside the header
                    raise BadInput("truncated OCF header") from None
                if want > self.limits.max_block_bytes:
                    raise BadInput("OCF header larger than --max-block-size "
                                   f"{self.limits.max_block_bytes >> 20} MB") from None
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
        """(record count, raw block bytes as stored) of each block, sync markers checked."""
        while True:
            count = self._read_long()
            if count is None:
                return
            size = self._read_long()
            if size is None or count < 0 or size < 0:
                raise BadInput("corrupt OCF block header")
            if size > self.limits.max_block_bytes:
                raise BadInput(f"OCF block of {size} bytes, larger than --max-block-size "
                               f"{self.limits.max_block_bytes >> 20} MB")
            data = self._read(size)
            if len(data) != size:
                raise BadInput("truncated OCF block")
            marker = self._read(16)
            # Like fastavro, the records of a complete block count even when the marker after
            # them is damaged or cut: the error is reported where the next block would start.
            yield count, data
            if len(marker) != 16:
                raise BadInput("truncated OCF file (the sync marker after a block is cut)")
            if marker != self.sync:
                raise BadInput("OCF sync marker not found after a block (corrupt, or garbage "
                               "after the last block)")

    def records(self, reader: Schema | None) -> Iterator[Any]:
        """Every datum of the stream, block by block, resolved into ``reader`` when given."""
        inflated = block_inflater(self.codec, self.limits)
        for count, data in self.blocks():
            yield from read_block(count, inflated(data), self.schema, reader, self.limits)

    def payload(self, data: bytes) -> bytes:
        """A one-record block as a complete OCF of its own."""
        return b"".join((self.header, write_long(1), write_long(len(data)), data, self.sync))
