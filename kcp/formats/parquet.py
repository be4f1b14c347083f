"""Parquet files (pyarrow, imported only here and only when used): Fink's data transfer format
and what pandas and polars users read.

Lossless both ways: the Avro schema travels in the file's key-value metadata (``avro.schema``),
and each Avro type has one Arrow type: records are structs, arrays lists, maps maps, a union with
null a nullable column, bytes and cutouts binary, enums strings, logical types their Arrow twins.
A union of several non-null types has no Arrow equivalent Parquet can hold: such a value is
kept as its Avro binary encoding in a binary column.

Written in row groups of about ``ROW_GROUP_BYTES`` and read one batch at a time, so a night
never sits in memory whole.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from ..codec import Schema, SchemaStore, write_body
from ..codec.framing import read_body
from ..codec.limits import Limits
from ..codec.schemas import named_types
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options
from .avro import AvroWriter

SCHEMA_KEY = b"avro.schema"
ROW_GROUP_BYTES = 32 << 20  # Arrow bytes held before a row group is written
BATCH_ROWS = 256  # records turned into Arrow at a time
MAGIC = b"PAR1"

Convert = Callable[[Any], Any]


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError("Parquet needs pyarrow: pip install 'kcp[parquet]'") from None
    return pyarrow


class _Mapping:
    """One Avro schema's Arrow schema, and the conversions of its datums both ways.

    A converter is None where the value passes as it is (most of an alert), so only the few
    values that need it are rebuilt.
    """

    def __init__(self, schema: Schema) -> None:
        self.pa = _pyarrow()
        self.schema = schema
        self.named = named_types(schema.parsed)
        root = schema.parsed
        if not (isinstance(root, dict) and root.get("type") == "record"):
            raise UsageError(f"Parquet holds records: schema {schema.name} is not a record")
        self.visiting: set[str] = set()
        fields, self.to_arrow, self.from_arrow = self._record(root)
        self.arrow_schema = self.pa.schema(fields, metadata={SCHEMA_KEY: schema.text.encode()})

    def _resolve(self, node: Any) -> Any:
        return self.named.get(node, node) if isinstance(node, str) else node

    def _record(self, node: dict) -> tuple[list, Convert | None, Convert | None]:
        name = node["name"]
        if name in self.visiting:
            raise UsageError(f"record {name} contains itself: Parquet cannot hold recursive types")
        self.visiting.add(name)
        fields, forward, backward = [], [], []
        for f in node["fields"]:
            arrow, nullable, to_arrow, from_arrow = self._type(f["type"])
            fields.append(self.pa.field(f["name"], arrow, nullable=nullable))
            if to_arrow is not None:
                forward.append((f["name"], to_arrow))
            if from_arrow is not None:
                backward.append((f["name"], from_arrow))
        self.visiting.discard(name)
        return fields, _fields_converter(forward), _fields_converter(backward)

    def _type(self, node: Any) -> tuple[Any, bool, Convert | None, Convert | None]:
        """(Arrow type, nullable, Avro -> Arrow value, Arrow -> Avro value) of an Avro type."""
        pa = self.pa
        node = self._resolve(node)
        if isinstance(node, list):
            others = [b for b in node if b != "null"]
            if len(others) == 1:
                arrow, _, forward, backward = self._type(others[0])
                return arrow, "null" in node, _nullable(forward), _nullable(backward)
            return pa.binary(), "null" in node, *self._encoded_union(node)
        if isinstance(node, str):
            return _PRIMITIVES[node](pa), node == "null", None, None
        kind, logical = node["type"], node.get("logicalType")
        if logical in _LOGICAL and (logical != "decimal" or node.get("precision", 0) <= 38):
            arrow, back = _LOGICAL[logical](pa, node)
            return arrow, False, (str if logical == "uuid" else None), back
        if kind == "record":
            fields, forward, backward = self._record(node)
            return pa.struct(fields), False, forward, backward
        if kind == "array":
            arrow, nullable, forward, backward = self._type(node["items"])
            items = pa.list_(pa.field("element", arrow, nullable=nullable))
            return items, False, _each(forward), _each(backward)
        if kind == "map":
            arrow, nullable, forward, backward = self._type(node["values"])
            values = pa.field("value", arrow, nullable=nullable)
            return (pa.map_(pa.string(), values), False, _map_values(forward),
                    _map_from_pairs(backward))
        if kind == "enum":
            return pa.string(), False, None, None
        if kind == "fixed":
            return pa.binary(node["size"]), False, None, None
        return self._type(kind)

    def _encoded_union(self, branches: list) -> tuple[Convert, Convert]:
        union = Schema(_inline(branches, self.named))

        def encode(value: Any) -> bytes:
            return write_body(value, union)

        def decode(value: bytes) -> Any:
            return read_body(value, union, None, Limits())  # bytes kcp wrote itself

        return _nullable(encode), _nullable(decode)


def _inline(node: Any, named: dict[str, Any]) -> Any:
    """``node`` with the named types it refers to spelled out: a schema of its own."""
    if isinstance(node, str):
        return _inline(named[node], named) if node in named else node
    if isinstance(node, list):
        return [_inline(b, named) for b in node]
    out = {k: v for k, v in node.items() if not k.startswith("__")}
    if node["type"] == "record":
        out["fields"] = [{**f, "type": _inline(f["type"], named)} for f in node["fields"]]
    elif node["type"] == "array":
        out["items"] = _inline(node["items"], named)
    elif node["type"] == "map":
        out["values"] = _inline(node["values"], named)
    return out


def _fields_converter(converters: list[tuple[str, Convert]]) -> Convert | None:
    if not converters:
        return None

    def convert(record: dict) -> dict:
        for name, each in converters:
            record[name] = each(record[name])
        return record

    return convert


def _nullable(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


def _each(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda values: [convert(v) for v in values]


def _map_values(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda mapping: {k: convert(v) for k, v in mapping.items()}


def _map_from_pairs(convert: Convert | None) -> Convert:
    # Arrow hands maps back as (key, value) pairs.
    if convert is None:
        return dict
    return lambda pairs: {k: convert(v) for k, v in pairs}


_PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "null": lambda pa: pa.null(), "boolean": lambda pa: pa.bool_(),
    "int": lambda pa: pa.int32(), "long": lambda pa: pa.int64(),
    "float": lambda pa: pa.float32(), "double": lambda pa: pa.float64(),
    "bytes": lambda pa: pa.binary(), "string": lambda pa: pa.string(),
}


def _utc_back(value: Any) -> Any:
    """Arrow's timestamps come back in a ZoneInfo('UTC'); fastavro's own are in timezone.utc."""
    import datetime as dt

    return value.astimezone(dt.UTC)


_LOGICAL: dict[str, Callable[[Any, dict], tuple[Any, Convert | None]]] = {
    "timestamp-millis": lambda pa, n: (pa.timestamp("ms", tz="UTC"), _utc_back),
    "timestamp-micros": lambda pa, n: (pa.timestamp("us", tz="UTC"), _utc_back),
    "local-timestamp-millis": lambda pa, n: (pa.timestamp("ms"), None),
    "local-timestamp-micros": lambda pa, n: (pa.timestamp("us"), None),
    "date": lambda pa, n: (pa.date32(), None),
    "time-millis": lambda pa, n: (pa.time32("ms"), None),
    "time-micros": lambda pa, n: (pa.time64("us"), None),
    "decimal": lambda pa, n: (pa.decimal128(n["precision"], n.get("scale", 0)), None),
    "uuid": lambda pa, n: (pa.string(), None),
}


def avro_schema_of(arrow_schema: Any) -> dict:
    """An Avro schema for a Parquet file written by another tool (pandas, Spark, Fink), which
    carries no ``avro.schema``: the inverse of the table above, nullable columns as unions
    with null, records named after their path (``root``, ``root_candidate``, ...)."""
    pa = _pyarrow()
    types = pa.types

    def field(name: str, arrow: Any, nullable: bool, path: str) -> dict:
        kind = avro(arrow, f"{path}_{name}")
        if nullable and kind != "null":
            return {"name": name, "type": ["null", kind], "default": None}
        return {"name": name, "type": kind}

    def avro(arrow: Any, path: str) -> Any:
        if types.is_dictionary(arrow):
            return avro(arrow.value_type, path)
        if types.is_struct(arrow):
            return {"type": "record", "name": path, "fields": [
                field(f.name, f.type, f.nullable, path) for f in arrow]}
        if types.is_list(arrow) or types.is_large_list(arrow) or types.is_fixed_size_list(arrow):
            item = arrow.value_field
            inner = avro(item.type, f"{path}_item")
            return {"type": "array", "items": ["null", inner] if item.nullable else inner}
        if types.is_map(arrow):
            item = arrow.item_field
            inner = avro(item.type, f"{path}_value")
            return {"type": "map", "values": ["null", inner] if item.nullable else inner}
        if types.is_timestamp(arrow):
            unit = "millis" if arrow.unit in ("s", "ms") else "micros"
            local = "" if arrow.tz else "local-"
            return {"type": "long", "logicalType": f"{local}timestamp-{unit}"}
        if types.is_decimal(arrow):
            return {"type": "bytes", "logicalType": "decimal", "precision": arrow.precision,
                    "scale": arrow.scale}
        if types.is_fixed_size_binary(arrow):
            return {"type": "fixed", "name": path, "size": arrow.byte_width}
        for test, kind in _PLAIN_FROM_ARROW:
            if test(types)(arrow):
                return kind
        raise UsageError(f"Parquet column type {arrow} has no Avro equivalent kcp knows")

    return {"type": "record", "name": "root", "fields": [
        field(f.name, f.type, f.nullable, "root") for f in arrow_schema]}


_PLAIN_FROM_ARROW: list[tuple[Callable[[Any], Callable[[Any], bool]], Any]] = [
    (lambda t: t.is_null, "null"), (lambda t: t.is_boolean, "boolean"),
    (lambda t: lambda a: t.is_int8(a) or t.is_int16(a) or t.is_int32(a) or t.is_uint8(a)
     or t.is_uint16(a), "int"),
    (lambda t: lambda a: t.is_int64(a) or t.is_uint32(a) or t.is_uint64(a), "long"),
    (lambda t: lambda a: t.is_float16(a) or t.is_float32(a), "float"),
    (lambda t: t.is_float64, "double"),
    (lambda t: lambda a: t.is_string(a) or t.is_large_string(a), "string"),
    (lambda t: lambda a: t.is_binary(a) or t.is_large_binary(a), "bytes"),
    (lambda t: t.is_date32, {"type": "int", "logicalType": "date"}),
    (lambda t: t.is_time32, {"type": "int", "logicalType": "time-millis"}),
    (lambda t: t.is_time64, {"type": "long", "logicalType": "time-micros"}),
]


class ParquetReader:
    def __init__(self, options: Options) -> None:
        self.schemas: SchemaStore = options.schemas
        self.limits = options.limits
        self.mappings: dict[Schema, _Mapping] = {}

    def decode(self, message: Message) -> list[Message]:
        """A payload holding a whole Parquet file (a tar member, a Kafka message)."""
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a Parquet file was expected")
        records = []
        for record in self._records(io.BytesIO(message.value), message.where()):
            if record.error is not None:
                raise record.error
            record.key, record.headers, record.topic = message.key, message.headers, message.topic
            record.partition, record.offset = message.partition, message.offset
            record.timestamp, record.position = message.timestamp, message.position
            record.source = message.source
            records.append(record)
        return records

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        if stream.seekable():
            yield from self._records(stream, source)
            return
        # The footer is at the end: a pipe is spooled to a temporary file first.
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(stream, spool, 1 << 20)
            spool.seek(0)
            yield from self._records(spool, source)

    def _records(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        pa = _pyarrow()
        try:
            parquet = pa.parquet.ParquetFile(stream)
            metadata = parquet.schema_arrow.metadata or {}
        except (pa.ArrowException, OSError) as exc:
            error = BadInput(f"not a readable Parquet file ({exc})")
            yield Message(source=source, error=error.at(source))
            return
        text = metadata.get(SCHEMA_KEY)
        if text is None:  # written by another tool: the schema its columns imply
            text = orjson.dumps(avro_schema_of(parquet.schema_arrow))
        schema = self.schemas.from_header_text(text)
        mapping = self.mappings.get(schema) or self.mappings.setdefault(schema, _Mapping(schema))
        reader = self.schemas.reader
        number = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                for row in batch.to_pylist():
                    number += 1
                    datum = row if mapping.from_arrow is None else mapping.from_arrow(row)
                    if reader is not None and reader is not schema:
                        datum = read_body(write_body(datum, schema), schema, reader,
                                          self.limits)
                    yield Message(datum=datum, schema=reader or schema, decoded=True,
                                  source=source, position=f"row {number}")
        except (pa.ArrowException, OSError) as exc:
            error = BadInput(f"corrupt Parquet data ({exc})")
            yield Message(source=source, position=f"row {number + 1}",
                          error=error.at(f"{source}:row {number + 1}"))


class ParquetWriter:
    def __init__(self, options: Options) -> None:
        self.avro = AvroWriter(options)  # picks each record's schema and maps plain JSON onto it
        self.mappings: dict[Schema, _Mapping] = {}

    def mapping(self, schema: Schema) -> _Mapping:
        found = self.mappings.get(schema)
        if found is None:
            found = self.mappings[schema] = _Mapping(schema)
        return found

    def encode(self, message: Message) -> bytes:
        """One record as a whole Parquet file (a tar member, a Kafka message)."""
        out = io.BytesIO()
        writer = ParquetStreamWriter(out, self)
        writer.write(message)
        writer.close()
        return out.getvalue()

    def recover(self, stream: BinaryIO) -> None:
        raise UsageError("a Parquet file cannot be continued (its index is written at the end): "
                         "copy without -g, or to .avro or .jsonl")

    def open_stream(self, stream: BinaryIO) -> ParquetStreamWriter:
        return ParquetStreamWriter(stream, self)


class ParquetStreamWriter:
    """Records in row groups of about ROW_GROUP_BYTES; all share the first record's schema."""

    encodes_alone = False  # a row group holds many records, the footer all of them

    def __init__(self, stream: BinaryIO, owner: ParquetWriter) -> None:
        self.pa = _pyarrow()
        self.stream = stream
        self.owner = owner
        self.mapping: _Mapping | None = None
        self.writer: Any = None
        self.rows: list[dict] = []
        self.batches: list[Any] = []
        self.held = 0  # Arrow bytes in self.batches

    def write(self, message: Message) -> None:
        schema = self.owner.avro.schema_of(message)
        if self.mapping is None:
            self.mapping = self.owner.mapping(schema)
        elif schema is not self.mapping.schema and \
                schema.fingerprint != self.mapping.schema.fingerprint:
            held = self.mapping.schema
            raise BadInput(f"record has schema {schema.name} ({schema.fingerprint:016x}) but this "
                           f"file holds {held.name} ({held.fingerprint:016x}); give "
                           "--reader-schema to write them all in one shape")
        datum = self.owner.avro.datum_of(message, schema)
        if not isinstance(datum, dict):
            raise BadInput(f"Parquet holds records, not {type(datum).__name__}")
        to_arrow = self.mapping.to_arrow
        self.rows.append(to_arrow(dict(datum)) if to_arrow is not None else datum)
        if len(self.rows) >= BATCH_ROWS:
            self._batch()
        if self.held >= ROW_GROUP_BYTES:
            self._write_row_group()

    def _batch(self) -> None:
        if not self.rows:
            return
        try:
            batch = self.pa.RecordBatch.from_pylist(self.rows, schema=self.mapping.arrow_schema)
        except (self.pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise BadInput(f"a record does not fit schema {self.mapping.schema.name}: "
                           f"{exc}") from None
        finally:
            self.rows = []
        self.batches.append(batch)
        self.held += batch.nbytes

    def _write_row_group(self) -> None:
        if not self.batches:
            return
        if self.writer is None:
            self.writer = self.pa.parquet.ParquetWriter(self.stream, self.mapping.arrow_schema)
        table = self.pa.Table.from_batches(self.batches)
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.batches, self.held = [], 0

    def flush(self) -> None:
        # Whole row groups only: the file becomes readable when closed (its footer).
        self._batch()
        self._write_row_group()
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is None and self.mapping is not None:
            self.writer = self.pa.parquet.ParquetWriter(self.stream, self.mapping.arrow_schema)
        if self.writer is not None:
            self.writer.close()
        self.stream.flush()
