"""A corpus of hostile and malformed inputs, built by code (nothing here is a copied file).

Each :class:`Case` is one file's bytes, named with the extension that selects its format, and
how kcp is run on it (extra options, the sink's extension). tests/test_hostile.py runs every
case through a file, a tar member and a topic; tests/test_fuzz.py starts its fuzzing from them.
The classes follow issue 15: recursion, header loops, declared counts, codec bombs, FITS
header bombs, poison schemas, uncaught exceptions, size limits and numbers changed silently.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import random
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro

OCF_MAGIC = b"Obj\x01"
SYNC = bytes(range(16))
GiB = 1 << 30

POINT = {"type": "record", "name": "point", "fields": [
    {"name": "n", "type": "int"}, {"name": "x", "type": ["null", "float"], "default": None}]}
LINKED = {"type": "record", "name": "L", "fields": [
    {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "L"]}]}


def varint(n: int) -> bytes:
    """Avro's zig-zag varint of any Python int (also the ones no writer would produce)."""
    n = (n << 1) ^ (n >> 63) if -(1 << 63) <= n < (1 << 63) else n << 1
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ocf_header(schema: Any, codec: bytes = b"null", sync: bytes = SYNC) -> bytes:
    text = schema if isinstance(schema, bytes) else json.dumps(schema).encode()
    return b"".join((OCF_MAGIC, varint(2), varint(11), b"avro.schema", varint(len(text)), text,
                     varint(10), b"avro.codec", varint(len(codec)), codec, varint(0), sync))


def ocf(schema: Any, count: int, block: bytes, codec: bytes = b"null") -> bytes:
    """An OCF of one block declaring ``count`` records, whatever ``block`` holds."""
    return ocf_header(schema, codec) + varint(count) + varint(len(block)) + block + SYNC


def good_ocf(records: list[dict] | None = None) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, POINT, records if records is not None else [{"n": 1, "x": 0.5}])
    return out.getvalue()


def linked_list(depth: int) -> bytes:
    """The body of a LINKED datum ``depth`` levels deep."""
    return (varint(1) + varint(1)) * depth + varint(1) + varint(0)


def nested_schema(depth: int) -> bytes:
    """The text of a schema of records nested ``depth`` deep (too deep for json.dumps)."""
    opening = "".join(f'{{"type":"record","name":"r{level}","fields":[{{"name":"c","type":'
                      for level in range(depth - 1, 0, -1))
    inner = '{"type":"record","name":"r0","fields":[{"name":"v","type":"int"}]}'
    return (opening + inner + "}]}" * (depth - 1)).encode()


def zstd_bomb(size: int) -> bytes:
    """A zstandard frame of RLE blocks inflating to ``size`` zero bytes, declaring no size
    (as a streaming writer makes them): 4 bytes per 128 kB."""
    block = 1 << 17
    header = struct.pack("<IB", 0xFD2FB528, 0x00) + bytes([0x58])  # window descriptor: 128 MB
    blocks = [struct.pack("<I", (block << 3) | (1 << 1))[:3] + b"\0"] * (size // block)
    last = bytearray(blocks[-1][:3])
    last[0] |= 1  # Last_Block
    return header + b"".join(blocks[:-1]) + bytes(last) + b"\0"


def deflate_bomb(size: int) -> bytes:
    """Raw deflate of ``size`` zero bytes: one MB compressed once and repeated (a full flush
    makes each copy stand alone), then an empty final block."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = squeeze.compress(bytes(1 << 20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    return segment * (size >> 20) + b"\x03\x00"


def snappy_claiming(size: int) -> bytes:
    """A raw snappy block whose header claims ``size`` bytes (plain varint), then little."""
    n, out = size, bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + b"\0\x01\0" * 8 + b"\0\0\0\0"


def fits_with(card: str, value: int) -> bytes:
    """A FITS alert written by kcp, one of its header cards made to claim ``value``."""
    from kcp.codec import Schema
    from kcp.formats.fits import Layout, alert_to_fits

    schema = Schema(POINT)
    data = bytearray(alert_to_fits({"n": 1, "x": 0.5}, Layout(schema)))
    for start in range(0, len(data), 80):
        if data[start:start + 8].rstrip() == card.encode():
            data[start + 10:start + 30] = f"{value:>20}".encode()
            return bytes(data)
    raise AssertionError(f"no {card} card")


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar archive of (name, bytes) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    filename: str  # its extension selects the format
    data: Callable[[], bytes]
    args: tuple[str, ...] = ()
    sink: str = "out.jsonl"
    # Topics carry payloads, not files: only the cases that are a payload run there.
    topic: bool = True


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _bad_crc(data: bytes) -> bytes:
    out = bytearray(_gzip(data))
    out[-8] ^= 0xFF
    return bytes(out)


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


CASES = [
    # 1. recursion
    Case("recursive-datum-6000-deep", "deep.avro", lambda: ocf(LINKED, 1, linked_list(6000))),
    Case("recursive-datum-500-deep", "deep.avro", lambda: ocf(LINKED, 1, linked_list(500))),
    Case("schema-1000-deep", "deep.avro", lambda: ocf(nested_schema(1000), 1, varint(1))),
    Case("json-arrays-900-deep", "deep.jsonl", lambda: b"[" * 900 + b"]" * 900 + b"\n"),
    Case("json-objects-900-deep", "deep.jsonl",
         lambda: b'{"a":' * 900 + b"1" + b"}" * 900 + b"\n"),
    # 2. an OCF header whose metadata length is negative (looped forever)
    Case("ocf-header-negative-length", "loop.avro",
         lambda: OCF_MAGIC + varint(1 << 62) + varint(2) + b"ab" + varint(-2) + bytes(40)),
    Case("ocf-header-huge-count", "count.avro", lambda: OCF_MAGIC + varint(1 << 62) + bytes(50)),
    # 3. declared counts
    Case("ocf-block-2^62-empty-records", "count.avro",
         lambda: ocf({"type": "record", "name": "e", "fields": []}, 1 << 62, b"")),
    Case("ocf-block-2^62-nulls", "count.avro", lambda: ocf("null", 1 << 62, b"")),
    Case("array-of-null-10^9", "count.avro",
         lambda: ocf({"type": "array", "items": "null"}, 1, varint(10**9) + varint(0))),
    Case("array-of-int-2^62", "count.avro",
         lambda: ocf({"type": "array", "items": "int"}, 1, varint(1 << 62) + varint(0))),
    # 4. codec bombs: 1 GiB from a few kB
    Case("zstandard-bomb-1GiB", "bomb.avro",
         lambda: ocf({"type": "array", "items": "int"}, 1, zstd_bomb(GiB), b"zstandard")),
    Case("deflate-bomb-512MiB", "bomb.avro",  # 520 kB: a Kafka message holds at most 1 MB
         lambda: ocf("bytes", 1, deflate_bomb(GiB // 2), b"deflate")),
    Case("snappy-claims-1GiB", "bomb.avro",
         lambda: ocf("bytes", 1, snappy_claiming(GiB), b"snappy")),
    Case("garbage-deflate-block", "bad.avro",
         lambda: ocf(POINT, 1, _random(1, 64), b"deflate")),
    Case("bzip2-block-not-bzip2", "bad.avro", lambda: ocf(POINT, 1, bz2.compress(b"x")[:20],
                                                           b"bzip2")),
    Case("unknown-codec", "bad.avro", lambda: ocf(POINT, 1, b"\x02", b"lzma9")),
    # 5. FITS header bombs
    Case("fits-naxis-10^9", "bomb.fits", lambda: fits_with("NAXIS", 10**9)),
    Case("fits-tfields-10^9", "bomb.fits", lambda: fits_with("TFIELDS", 10**9)),
    # 6. poison schemas in an OCF header
    Case("schema-12345", "schema.avro", lambda: ocf(b"12345", 1, varint(1))),
    Case("schema-unknown-type", "schema.avro",
         lambda: ocf({"type": "record", "name": "r", "fields": [{"name": "a", "type": "nope"}]},
                     1, varint(1))),
    Case("schema-not-json", "schema.avro", lambda: ocf(b"{not json", 1, varint(1))),
    Case("schema-deep-json-default", "schema.avro", lambda: ocf(
        b'{"type":"record","name":"r","fields":[{"name":"a","type":"int","default":'
        + b"[" * 3000 + b"]" * 3000 + b"}]}", 1, varint(1))),
    # 10. formerly uncaught exceptions
    Case("ocf-17-byte-header", "short.avro", lambda: good_ocf()[:17]),
    Case("ocf-header-only", "short.avro", lambda: ocf_header(POINT)),
    Case("ocf-bad-sync", "sync.avro", lambda: good_ocf()[:-16] + bytes(16)),
    Case("union-index-2^62", "union.avro", lambda: ocf(POINT, 1, varint(1) + varint(1 << 62))),
    Case("random-bytes-as-avro", "random.avro", lambda: _random(2, 300)),
    Case("gzip-bad-crc", "crc.jsonl.gz", lambda: _bad_crc(b'{"n": 1}\n' * 3), topic=False),
    Case("gzip-garbage-deflate", "garbage.jsonl.gz",
         lambda: _gzip(b'{"n": 1}\n')[:10] + _random(3, 100), topic=False),
    Case("jsonl-gz-truncated", "cut.jsonl.gz", lambda: _gzip(b'{"n": 1}\n' * 500)[:40],
         topic=False),
    Case("long-2^63-into-avro", "big.jsonl",
         lambda: b'{"n": 1, "x": 1.5}\n{"n": 9223372036854775808}\n',
         args=("--schema", "{schema}"), sink="out.avro"),
    Case("missing-optional-float-with-schema", "optional.jsonl", lambda: b'{"n": 2}\n',
         args=("--schema", "{schema}"), sink="out.jsonl"),
    Case("json-into-avro-sink", "doc.jsonl", lambda: b'{"n": 1}\n', sink="out.avro"),
    Case("invalid-utf8-json", "bad.jsonl", lambda: b'{"n": "\xff\xfe"}\n'),
    # 12. JSON numbers kcp would have changed silently
    Case("json-integer-beyond-64-bits", "big.jsonl",  # orjson read it as the float 1e+29
         lambda: b'{"n": 1, "id": 100000000000000000000000000000}\n'),
    Case("float32-overflow-into-avro", "f32.jsonl", lambda: b'{"n": 1, "x": 1e39}\n',
         args=("--schema", "{schema}"), sink="out.avro"),  # fastavro wrote it as Infinity
    Case("int-2^40-into-avro", "int.jsonl", lambda: b'{"n": 1099511627776}\n',
         args=("--schema", "{schema}"), sink="out.avro"),
    Case("avro-json-int-2^40-into-avro", "int.jsonl",  # fastavro's JSON reader took any int
         lambda: b'{"n": 1099511627776, "x": null}\n',
         args=("--schema", "{schema}", "--json-style", "avro"), sink="out.avro"),
    Case("avro-json-float32-overflow-into-avro", "f32.jsonl",
         lambda: b'{"n": 1, "x": {"float": 1e39}}\n',
         args=("--schema", "{schema}", "--json-style", "avro"), sink="out.avro"),
    # 11. size limits (a lowered limit: the default one is 256 MB)
    Case("json-line-over-limit", "long.jsonl", lambda: b'{"s": "' + b"x" * (3 << 20) + b'"}\n',
         args=("--max-line-size", "1"), topic=False),  # the broker's limit is 1 MB
    Case("payload-over-limit", "whole.avro", lambda: b"\0" + b"x" * (3 << 20),
         args=("--max-line-size", "1", "--schema", "{schema}"), topic=False),
]
