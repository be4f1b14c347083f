"""The compiled Avro -> JSON transcoder (``kcp.codec.compiled``, Rust, in native/), if built.

It writes the JSON documents of :class:`kcp.codec.jsonmap.AvroToJson` in the ``kcp`` style,
byte for byte, straight from the Avro bytes: no Python object is built per value.  Each writer
schema is compiled once into a flat list of ops (a ``Program``), cached per :class:`Schema` as
the Python path caches its converters.  A body the program cannot write exactly as Python would
(see native/src/lib.rs) and a schema it does not know go through the Python path, so the output
never depends on which path ran.

The extension is optional: without a Rust toolchain kcp installs without it, and
``KCP_NATIVE=0`` turns it off (the test suite runs once that way).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import BadInput
from .framing import BodyReader, datum_reader, left_over
from .jsonmap import AvroToJson
from .schemas import Schema, named_types

try:
    from . import compiled  # type: ignore[attr-defined]
except ImportError:  # built without cargo: the Python path does everything
    compiled = None

BUILT = compiled is not None
ENABLED = BUILT and os.environ.get("KCP_NATIVE", "1") != "0"
# What a body may claim before it is refused as hostile (the defaults of the Python codec's
# limits, issue 15): records, arrays and maps nested deeper than MAX_DEPTH, and more than
# MAX_EMPTY_ITEMS items that take no bytes (nulls, empty records) in one array or block.
MAX_DEPTH = 64
MAX_EMPTY_ITEMS = 10_000_000

# Avro's logical types as fastavro reads them ("<type>-<logicalType>"), and the op of each.
_LOGICAL_OPS = {
    "long-timestamp-millis": "timestamp-millis", "long-timestamp-micros": "timestamp-micros",
    "long-local-timestamp-millis": "local-timestamp-millis",
    "long-local-timestamp-micros": "local-timestamp-micros",
    "int-date": "date", "int-time-millis": "time-millis", "long-time-micros": "time-micros",
    "bytes-decimal": "decimal", "fixed-decimal": "decimal", "string-uuid": "uuid",
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

Op = tuple[str, list[int], list[str]]


def json_transcoder(options: Any) -> NativeJson | None:
    """The native transcoder when it is built, enabled, and the run only needs kcp-style JSON
    documents of the records as written (``options.json_documents``, no ``--reader-schema``)."""
    if not (ENABLED and options.json_documents and options.json_style == "kcp"
            and options.schemas.reader is None):
        return None
    return NativeJson(options.bytes_mode or "base64", datum_reader(options.schemas))


def codec_name() -> str:
    """Which Avro -> JSON path runs, for ``kcp --version``."""
    return "native codec" if ENABLED else "python codec"


class _Unsupported(Exception):
    """A schema the native program does not cover: the Python path handles it."""


def compile_ops(parsed: Any) -> list[Op]:
    """The ops of a schema parsed by fastavro: the root first, children by index."""
    named = named_types(parsed)
    ops: list[Op] = []
    by_name: dict[str, int] = {}

    def add(op: Op) -> int:
        ops.append(op)
        return len(ops) - 1

    def node(schema: Any) -> int:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return add((schema, [], []))
            if schema in by_name:
                return by_name[schema]
            if schema not in named:
                raise _Unsupported(f"unknown type {schema}")
            schema = named[schema]
        if isinstance(schema, list):
            index = add(("union", [], []))
            ops[index] = ("union", [node(branch) for branch in schema], [])
            return index
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None and f"{kind}-{logical}" in _LOGICAL_OPS:
            op = _LOGICAL_OPS[f"{kind}-{logical}"]
            if op == "decimal":
                if "precision" not in schema:
                    raise _Unsupported("a decimal without precision")
                size = schema["size"] if kind == "fixed" else -1
                index = add((op, [schema["precision"], schema.get("scale", 0), size], []))
            else:
                index = add((op, [], []))
            if kind == "fixed":
                by_name[schema["name"]] = index
            return index
        if kind in ("record", "error"):
            index = by_name[schema["name"]] = add(("record", [], []))
            fields = schema["fields"]
            ops[index] = ("record", [node(f["type"]) for f in fields], [f["name"] for f in fields])
            return index
        if kind == "enum":
            index = by_name[schema["name"]] = add(("enum", [], list(schema["symbols"])))
            return index
        if kind == "fixed":
            index = by_name[schema["name"]] = add(("fixed", [schema["size"]], []))
            return index
        if kind in ("array", "map"):
            index = add((kind, [], []))
            ops[index] = (kind, [node(schema["items" if kind == "array" else "values"])], [])
            return index
        return node(kind)  # {"type": "long"}, or a type given as a nested definition

    node(parsed)
    return ops


class TruncatedBody(BadInput):
    """A body that ends before its values do: in a file, what follows its last record."""


class JsonDocument:
    """A record already written as its JSON document (by :class:`NativeJson`)."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


class NativeJson:
    """Reads Avro bodies into :class:`JsonDocument` records, natively where it can."""

    def __init__(self, bytes_mode: str, read_datums: BodyReader) -> None:
        self.bytes_mode = bytes_mode
        self.read_datums = read_datums  # the Python path: (body, count, writer) -> datums
        self.to_json = AvroToJson(bytes_mode, "kcp")
        self._programs: dict[Schema, Any] = {}

    def program(self, schema: Schema) -> Any:
        if schema not in self._programs:
            try:
                program = compiled.Program(compile_ops(schema.parsed), self.bytes_mode,
                                           MAX_DEPTH, MAX_EMPTY_ITEMS)
            except (_Unsupported, ValueError, KeyError, TypeError):
                program = None
            self._programs[schema] = program
        return self._programs[schema]

    def _python(self, body: bytes, count: int, writer: Schema) -> list[JsonDocument]:
        return [JsonDocument(self.to_json(datum, writer))
                for datum in self.read_datums(body, count, writer)]

    def block(self, body: bytes, count: int, writer: Schema
              ) -> tuple[list[JsonDocument], int, BadInput | None]:
        """The documents of up to ``count`` records of ``body``, where reading ended, and the
        error that stopped it early, if any (the records before it are kept)."""
        program = self.program(writer)
        if program is None:
            return self._python(body, count, writer), len(body), None
        texts, end, problem = program.transcode(body, count)
        if problem is not None:
            kind, text, at = problem
            if kind == "unsupported":
                return self._python(body, count, writer), len(body), None
            error = (TruncatedBody(f"truncated Avro datum: at byte {at} of the body, {text}")
                     if kind == "truncated" else
                     BadInput(f"corrupt Avro datum at byte {at} of the body: {text}"))
            return [JsonDocument(t) for t in texts], end, error
        return [JsonDocument(t) for t in texts], end, None

    def __call__(self, body: bytes, count: int, writer: Schema) -> list[JsonDocument]:
        """The documents of exactly ``count`` records filling ``body``."""
        documents, end, error = self.block(body, count, writer)
        if error is not None:
            raise error
        if end != len(body):
            raise BadInput(left_over(len(body) - end, writer))
        return documents
