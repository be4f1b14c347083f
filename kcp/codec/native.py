"""The compiled Avro -> JSON transcoder (``kcp.codec.compiled``, Rust, in native/), if built.

It writes the JSON documents of :class:`kcp.codec.jsonmap.AvroToJson` in the ``kcp`` style,
byte for byte, straight from the Avro bytes: no Python object is built per value.  Each writer
schema is compiled once into a flat list of ops (a ``Program``), cached per :class:`Schema` as
the Python path caches its converters.  A body the program cannot write exactly as Python would
(see native/src/lib.rs) and a schema it does not know go through the Python path, so the output
never depends on which path ran.

With ``--fields`` the program also does the projection of ``kcp.stages.project_stage`` in the
same pass: it writes the fields named and reads past the others without writing them.  Records
it hands back to the Python path are then left as datums, for that stage to project.

The extension is optional: without a Rust toolchain kcp installs without it, and
``KCP_NATIVE=0`` turns it off (the test suite runs once that way).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import BadInput
from .framing import BodyReader, DatumReader, left_over
from .jsonmap import AvroToJson
from .limits import Limits
from .schemas import Schema, named_types

try:
    from . import compiled  # type: ignore[attr-defined]
except ImportError:  # built without cargo: the Python path does everything
    compiled = None

BUILT = compiled is not None
ENABLED = BUILT and os.environ.get("KCP_NATIVE", "1") != "0"

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


def json_transcoder(options: Any, projection: dict[str, Any] | None) -> NativeJson | None:
    """The native transcoder when it is built, enabled, and the run only needs kcp-style JSON
    documents of the records as written (``options.json_documents``, no ``--reader-schema``),
    or of what ``projection`` (the tree of ``--fields``, ``kcp.stages.field_tree``) keeps."""
    if not (ENABLED and options.json_documents and options.json_style == "kcp"
            and options.schemas.reader is None):
        return None
    store = options.schemas
    return NativeJson(options.bytes_mode or "base64", DatumReader(store), store.limits,
                      projection)


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


# What a "record" projection op does with each field: skip it, write it whole, or project it.
_SKIP, _WHOLE, _DESCEND = 0, 1, 2


def compile_projection(ops: list[Op], tree: dict[str, Any]) -> list[Op]:
    """The ops of what ``--fields`` keeps of the values of ``ops`` (``tree``: each name with
    the tree below it, or None for all of it; ``kcp.stages.field_tree``), the root's first.
    Children are projections by index, or nodes of ``ops``: those written whole or skipped."""
    projection: list[Op] = []
    done: dict[tuple[int, int], int] = {}

    def project(node: int, tree: dict[str, Any]) -> int:
        if (node, id(tree)) in done:  # a recursive type
            return done[node, id(tree)]
        index = done[node, id(tree)] = len(projection)
        projection.append(("absent", [node], []))  # what any value but those below gets
        kind, children, names = ops[node]
        if kind == "record":
            actions: list[int] = []
            for name, child in zip(names, children, strict=True):
                if name not in tree:
                    actions += [_SKIP, child]
                elif tree[name] is None:
                    actions += [_WHOLE, child]
                else:
                    actions += [_DESCEND, project(child, tree[name])]
            projection[index] = ("record", actions, names)
        elif kind == "map":
            values = children[0]
            kept = [-1 if below is None else project(values, below) for below in tree.values()]
            projection[index] = ("map", [values, *kept], list(tree))
        elif kind == "array":
            projection[index] = ("array", [children[0], project(children[0], tree)], [])
        elif kind == "union":
            projection[index] = ("union", [project(branch, tree) for branch in children], [])
        return index

    project(0, tree)
    return projection


class JsonDocument:
    """A record already written as its JSON document (by :class:`NativeJson`)."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


class NativeJson:
    """Reads Avro bodies into :class:`JsonDocument` records, natively where it can (a
    :class:`kcp.codec.framing.BodyReader`); ``datums`` is the Python path it falls back on.
    With a ``projection`` (the tree of ``--fields``) the documents hold what it keeps, and
    records read by the Python path stay datums, for the ``--fields`` stage to project."""

    def __init__(self, bytes_mode: str, datums: BodyReader, limits: Limits,
                 projection: dict[str, Any] | None = None) -> None:
        self.bytes_mode = bytes_mode
        self.datums = datums
        self.limits = limits
        self.projection = projection
        self.to_json = AvroToJson(bytes_mode, "kcp")
        # The program of each schema, for this reader's one projection.
        self._programs: dict[Schema, Any] = {}

    def program(self, schema: Schema) -> Any:
        """The compiled program of ``schema``, or None for a schema only Python writes."""
        if schema not in self._programs:
            try:
                ops = compile_ops(schema.parsed)
                projection = [] if self.projection is None else compile_projection(
                    ops, self.projection)
                program = compiled.Program(ops, self.bytes_mode, self.limits.max_depth,
                                           self.limits.max_items, projection)
            except (_Unsupported, ValueError, KeyError, TypeError):
                program = None
            self._programs[schema] = program
        return self._programs[schema]

    def _python_path(self, datums: Iterable[Any], writer: Schema) -> Iterator[Any]:
        """The records of the Python path: datums to project, or JSON documents."""
        if self.projection is not None:
            yield from datums
            return
        for datum in datums:
            yield JsonDocument(self.to_json(datum, writer))

    def transcode(self, body: bytes, count: int, writer: Schema
                  ) -> tuple[list[JsonDocument], int, BadInput | None] | None:
        """The documents of up to ``count`` records of ``body``, where reading ended, and the
        error that stopped it early, if any; None when only the Python path writes them."""
        program = self.program(writer)
        if program is None:
            return None
        texts, end, problem = program.transcode(body, count)
        if problem is None:
            return [JsonDocument(t) for t in texts], end, None
        kind, text, at = problem
        if kind == "unsupported":
            return None
        what = "truncated" if kind == "truncated" else "corrupt"
        return ([JsonDocument(t) for t in texts], end,
                BadInput(f"{what} Avro datum at byte {at} of the body: {text}"))

    def block(self, data: bytes, count: int, writer: Schema) -> list[Any]:
        done = self.transcode(data, count, writer)
        if done is None:
            return list(self._python_path(self.datums.block(data, count, writer), writer))
        documents, end, error = done
        if error is not None:
            raise error
        if end != len(data):
            raise BadInput("OCF block holds bytes past its declared records")
        return documents

    def exactly(self, body: bytes, writer: Schema) -> list[Any]:
        done = self.transcode(body, 1, writer)
        if done is None:
            return list(self._python_path(self.datums.exactly(body, writer), writer))
        documents, end, error = done
        if error is not None:
            raise error
        if end != len(body):
            raise BadInput(left_over(len(body) - end, writer))
        return documents

    def file_block(self, data: bytes, count: int, writer: Schema,
                   reader_block: Callable[[], Iterable[Any]]) -> Iterator[Any]:
        """The documents of one block of an OCF file.  A block the program stops in is read
        again by the Python path (``reader_block``), so that a file's records before an error,
        and the error's words, are those of the Python path."""
        done = self.transcode(data, count, writer)
        if done is None or done[2] is not None:
            return self._python_path(reader_block(), writer)
        return iter(done[0])
