"""Property tests of the Avro codec core: random schemas and datums through every framing, through
JSON in both styles and back, and OCF files with every block codec.

Datums are compared by re-encoding them to Avro bytes with the writer schema: NaN != NaN, and the
bytes are what ``kcp consume | kcp produce`` must keep.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import io
import math
import os
import uuid
from collections.abc import Callable
from typing import Any

import cramjam
import fastavro
import fastavro._write
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kcptest import positive_nan

from kcp.codec import (
    FRAMINGS,
    AvroToJson,
    JsonToAvro,
    Schema,
    SchemaStore,
    decode_payload,
    detect_framing,
    encoder_for,
    write_body,
)
from kcp.formats import FORMATS
from kcp.options import Options

# A deeper search when asked: KCP_HYPOTHESIS_EXAMPLES=3000 pytest tests/test_codec_properties.py
SANE = settings(max_examples=int(os.environ.get("KCP_HYPOTHESIS_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------
# Random schemas, each with a strategy for its datums
# ---------------------------------------------------------------------------------------------

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
LOGICAL = ("timestamp-millis", "timestamp-micros", "local-timestamp-millis",
           "local-timestamp-micros", "date", "time-millis", "time-micros", "decimal-bytes",
           "decimal-fixed", "uuid")
# The Avro type a logical type annotates: a union may hold only one branch of each.
LOGICAL_BASE = {"timestamp-millis": "long", "timestamp-micros": "long",
                "local-timestamp-millis": "long", "local-timestamp-micros": "long",
                "date": "int", "time-millis": "int", "time-micros": "long",
                "decimal-bytes": "bytes", "uuid": "string"}
TEXT = st.text(st.characters(codec="utf-8"), max_size=8)  # non-ASCII, no lone surrogates
NAME_TAIL = st.text("abcxyzAZ_019", max_size=4)
UTC = dt.UTC


def _nan_keeps_sign_only(x: float) -> float:
    # The JSON mapping keeps a NaN's sign ("-NaN"), not its other payload bits.
    return math.copysign(math.nan, x) if math.isnan(x) else x


DOUBLES = st.floats().map(_nan_keeps_sign_only)
FLOATS = st.floats(width=32).map(_nan_keeps_sign_only)


class Branch:
    """A generated type: its schema JSON, a strategy for its values, and what tells it apart."""

    def __init__(self, definition: Any, values: st.SearchStrategy, slot: str,
                 json_text: str | None = None, json_kind: str | None = None,
                 logical: bool = False, record: bool = False, nested_logical: bool = False
                 ) -> None:
        self.definition = definition
        self.values = values
        self.slot = slot            # the Avro identity a union may hold once
        self.json_text = json_text  # how the kcp JSON style writes it, if as a string
        self.json_kind = json_kind  # "dict" or "list" for containers
        self.logical = logical
        self.record = record        # a record, or a union holding one
        self.nested_logical = nested_logical or logical  # a logical type anywhere inside


class Generator:
    """Draws one schema; ``json_safe`` keeps to unions whose branches JSON tells apart."""

    def __init__(self, draw: Callable, json_safe: bool, avro_json: bool = False) -> None:
        self.draw = draw
        self.json_safe = json_safe
        # fastavro's JSON encoder fails on records without fields and on the map key "", its
        # decoder on a map of records whose last field is a record.
        self.avro_json = avro_json
        self.min_fields = 1 if avro_json else 0
        self.keys = TEXT.filter(bool) if avro_json else TEXT
        self.count = 0
        self.named: list[tuple[str, Branch]] = []  # (full name, branch), each complete

    def name(self, prefix: str, namespace: str | None) -> tuple[dict, str, str | None]:
        """Name attributes for a new named type, its full name, and its namespace."""
        self.count += 1
        short = f"{prefix}{self.count}_{self.draw(NAME_TAIL)}"  # "_" ends the unique count
        style = self.draw(st.sampled_from(("inherit", "namespace", "dotted")))
        if style == "namespace":
            space = self.draw(st.sampled_from(("kcp.test", "ztf.alert", "x")))
            return {"name": short, "namespace": space}, f"{space}.{short}", space
        if style == "dotted":
            return {"name": f"lsst.v9_0.{short}"}, f"lsst.v9_0.{short}", "lsst.v9_0"
        full = f"{namespace}.{short}" if namespace else short
        return {"name": short}, full, namespace

    def any(self, depth: int, namespace: str | None) -> Branch:
        kinds = ["primitive", "logical", "enum", "fixed"]
        if depth > 0:
            kinds += ["record", "array", "map", "union"]
        if self.named:
            kinds.append("reference")
        kind = self.draw(st.sampled_from(kinds))
        return getattr(self, kind)(depth, namespace)

    def primitive(self, depth: int, namespace: str | None) -> Branch:
        name = self.draw(st.sampled_from(PRIMITIVES))
        values = {"null": st.none(), "boolean": st.booleans(),
                  "int": st.integers(-2**31, 2**31 - 1), "long": st.integers(-2**63, 2**63 - 1),
                  "float": FLOATS, "double": DOUBLES, "bytes": st.binary(max_size=8),
                  "string": TEXT}[name]
        text = {"bytes": "base64", "string": "string", "float": "float", "double": "float"}
        # A primitive is sometimes written in its long form, {"type": "int"}.
        definition = {"type": name} if self.draw(st.booleans()) and name != "null" else name
        return Branch(definition, values, name, text.get(name))

    def logical(self, depth: int, namespace: str | None) -> Branch:
        logical = self.draw(st.sampled_from(LOGICAL))
        if logical == "decimal-fixed":
            size = self.draw(st.integers(1, 12))
            precision = self.draw(st.integers(1, math.floor(math.log10(2 ** (8 * size - 1) - 1))))
            attrs, full, _ = self.name("D", namespace)
            definition = {"type": "fixed", "size": size, **attrs, "logicalType": "decimal",
                          "precision": precision,
                          "scale": self.draw(st.integers(0, precision))}
            branch = Branch(definition, _decimals(precision, definition["scale"]), full, "decimal",
                            logical=True)
            self.named.append((full, branch))
            return branch
        if logical == "decimal-bytes":
            precision = self.draw(st.integers(1, 30))
            scale = self.draw(st.integers(0, precision))
            definition = {"type": "bytes", "logicalType": "decimal", "precision": precision,
                          "scale": scale}
            return Branch(definition, _decimals(precision, scale), "bytes", "decimal",
                          logical=True)
        values = {
            "timestamp-millis": st.datetimes(timezones=st.just(UTC)),
            "timestamp-micros": st.datetimes(timezones=st.just(UTC)),
            "local-timestamp-millis": st.datetimes(),
            "local-timestamp-micros": st.datetimes(),
            "date": st.dates(),
            "time-millis": st.times(),
            "time-micros": st.times(),
            "uuid": st.uuids(),
        }[logical]
        base = LOGICAL_BASE[logical]
        return Branch({"type": base, "logicalType": logical}, values, base, logical,
                      logical=True)

    def enum(self, depth: int, namespace: str | None) -> Branch:
        attrs, full, _ = self.name("E", namespace)
        symbols = self.draw(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True),
                                     min_size=1, max_size=4, unique=True))
        branch = Branch({"type": "enum", **attrs, "symbols": symbols}, st.sampled_from(symbols),
                        full, "string")
        self.named.append((full, branch))
        return branch

    def fixed(self, depth: int, namespace: str | None) -> Branch:
        attrs, full, _ = self.name("F", namespace)
        size = self.draw(st.integers(1, 16))
        branch = Branch({"type": "fixed", **attrs, "size": size},
                        st.binary(min_size=size, max_size=size), full, "base64")
        self.named.append((full, branch))
        return branch

    def record(self, depth: int, namespace: str | None) -> Branch:
        attrs, full, inner = self.name("R", namespace)
        names = self.draw(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
                                   min_size=self.min_fields, max_size=5, unique=True))
        fields, values, logical = [], {}, False
        for field_name in names:
            branch = self.any(depth - 1, inner)
            fields.append({"name": field_name, "type": branch.definition})
            values[field_name] = branch.values
            logical = logical or branch.nested_logical
        branch = Branch({"type": "record", **attrs, "fields": fields},
                        st.fixed_dictionaries(values), full, json_kind="dict", record=True,
                        nested_logical=logical)
        self.named.append((full, branch))
        return branch

    def array(self, depth: int, namespace: str | None) -> Branch:
        items = self.any(depth - 1, namespace)
        return Branch({"type": "array", "items": items.definition},
                      st.lists(items.values, max_size=4), "array", json_kind="list",
                      nested_logical=items.nested_logical)

    def map(self, depth: int, namespace: str | None) -> Branch:
        known = len(self.named)
        values = self.any(depth - 1, namespace)
        if self.avro_json and values.record:
            del self.named[known:]
            values = self.primitive(depth - 1, namespace)
        return Branch({"type": "map", "values": values.definition},
                      st.dictionaries(self.keys, values.values, max_size=4), "map",
                      json_kind="dict", nested_logical=values.nested_logical)

    def reference(self, depth: int, namespace: str | None) -> Branch:
        # A name without a namespace cannot be referred to from inside one.
        reachable = [(full, b) for full, b in self.named if "." in full or not namespace]
        if not reachable:
            return self.primitive(depth, namespace)
        full, target = self.draw(st.sampled_from(reachable))
        # A full name always resolves; a short name only from inside the same namespace.
        space, _, short = full.rpartition(".")
        written = short if space == (namespace or "") and self.draw(st.booleans()) else full
        return Branch(written, target.values, full, target.json_text, target.json_kind,
                      target.logical, target.record, target.nested_logical)

    def union(self, depth: int, namespace: str | None) -> Branch:
        branches: list[Branch] = []
        for _ in range(self.draw(st.integers(1, 4))):
            known = len(self.named)
            candidate = self.any(depth - 1, namespace)
            if (isinstance(candidate.definition, list)  # unions may not hold unions
                    or any(b.slot == candidate.slot for b in branches)
                    or (self.json_safe and not _json_distinct([*branches, candidate]))
                    or _claimable([*branches, candidate])):
                del self.named[known:]  # a dropped branch defines nothing to refer to
                continue
            branches.append(candidate)
            # fastavro picks the first branch that takes a value, and a logical branch takes what
            # it should not (an int as a date, a string as a uuid) or fails on it (a str as a
            # date): so one logical branch at most, and last, as in ["null", {"logicalType"...}].
            if candidate.logical:
                break
        if not branches:
            branches.append(Branch("null", st.none(), "null"))
        return Branch([b.definition for b in branches], st.one_of([b.values for b in branches]),
                      "union", record=any(b.record for b in branches),
                      nested_logical=any(b.nested_logical for b in branches))


def _claimable(branches: list[Branch]) -> bool:
    """Whether fastavro may write one object branch's raw values into another's logical type.

    A dict generated for {"a": bytes} also fits {"a": decimal}; written there and read back it
    is a Decimal, whose bytes differ from the raw ones.
    """
    objects = [b for b in branches if b.json_kind == "dict"]
    return len(objects) > 1 and any(b.nested_logical for b in objects)


def _json_distinct(branches: list[Branch]) -> bool:
    """Whether the kcp JSON style tells every branch apart (see kcp.codec.jsonmap)."""
    texts = {b.json_text for b in branches if b.json_text}
    containers = [b.json_kind for b in branches if b.json_kind]
    return len(texts) <= 1 and len(containers) == len(set(containers))


def _decimals(precision: int, scale: int) -> st.SearchStrategy:
    bound = 10 ** precision - 1
    # Exact in the schema's precision: the default context (28 digits) would round 10**29 - 1
    # up to 10**29, a value with more digits than its schema allows.
    exact = decimal.Context(prec=precision)
    return st.integers(-bound, bound).map(lambda n: decimal.Decimal(n).scaleb(-scale, exact))


@st.composite
def schema_and_datum(draw: Callable, json_safe: bool = False, record: bool = False,
                     avro_json: bool = False) -> tuple[Any, Any]:
    generator = Generator(draw, json_safe, avro_json)
    top_record = record or draw(st.integers(0, 4))  # mostly records, as alerts are
    root = generator.record(3, None) if top_record else generator.any(2, None)
    return root.definition, draw(root.values)


# ---------------------------------------------------------------------------------------------
# Framings
# ---------------------------------------------------------------------------------------------

REGISTRY_IDS = st.integers(0, 2**31 - 1)


def _store_for(framing: str, schema: Schema) -> SchemaStore:
    """The store a reader of ``framing`` would have: what it needs, and only that."""
    store = SchemaStore()
    if framing in ("confluent", "single-object"):
        store.add(schema)
    elif framing == "schemaless":
        store.default = schema
    return store


@SANE
@given(schema_and_datum(), st.sampled_from(FRAMINGS), REGISTRY_IDS, st.booleans())
def test_every_framing_round_trips(case: tuple, framing: str, registry_id: int,
                                   detect: bool) -> None:
    definition, datum = case
    schema = Schema(definition, registry_id=registry_id)
    payload = encoder_for(framing)(datum, schema)
    store = _store_for(framing, schema)
    # A bare body may happen to start like a framed payload; only a real frame may win.
    if detect and framing == "schemaless" and detect_framing(payload, store) != "schemaless":
        return
    records = decode_payload(payload, store, None if detect else framing)
    assert len(records) == 1
    decoded, decoded_schema = records[0]
    assert decoded_schema.fingerprint == schema.fingerprint
    assert write_body(decoded, decoded_schema) == write_body(datum, schema)


@SANE
@given(schema_and_datum())
def test_each_framing_has_its_leading_bytes(case: tuple) -> None:
    definition, datum = case
    schema = Schema(definition, registry_id=701)
    data = write_body(datum, schema)
    ocf = encoder_for("ocf")(datum, schema)
    assert ocf[:4] == b"Obj\x01"
    (again,) = list(fastavro.reader(io.BytesIO(ocf)))  # fastavro reads kcp's OCF
    assert write_body(again, schema) == data
    assert encoder_for("confluent")(datum, schema) == b"\x00\x00\x00\x02\xbd" + data
    framed = encoder_for("single-object")(datum, schema)
    assert framed[:2] == b"\xc3\x01"
    assert int.from_bytes(framed[2:10], "little") == schema.fingerprint
    assert framed[10:] == data
    assert encoder_for("schemaless")(datum, schema) == data


# ---------------------------------------------------------------------------------------------
# JSON, both styles
# ---------------------------------------------------------------------------------------------


@SANE
@given(schema_and_datum(json_safe=True), st.sampled_from(("base64", "hex")))
def test_kcp_json_is_strict_json_and_converts_back_exactly(case: tuple, bytes_mode: str) -> None:
    definition, datum = case
    schema = Schema(definition)
    expected = write_body(datum, schema)
    (decoded, _), = decode_payload(encoder_for("schemaless")(datum, schema),
                                   _store_for("schemaless", schema), "schemaless")
    to_json, from_json = AvroToJson(bytes_mode), JsonToAvro(bytes_mode)
    for value in (datum, decoded):  # as generated, and as the codec hands it on
        document = to_json(copy.deepcopy(value), schema)
        orjson.loads(document)  # strict JSON: no bare NaN, no raw bytes
        assert write_body(from_json(document, schema), schema) == expected




@SANE
@given(schema_and_datum(avro_json=True))
def test_avro_json_style_converts_back_exactly(case: tuple) -> None:
    definition, datum = case
    schema = Schema(definition)
    (decoded, _), = decode_payload(encoder_for("schemaless")(datum, schema),
                                   _store_for("schemaless", schema), "schemaless")
    document = AvroToJson(style="avro")(copy.deepcopy(decoded), schema)
    back = JsonToAvro(style="avro")(document, schema)
    # The Avro JSON encoding writes NaN bare, without its sign (documented in kcp.codec.jsonmap).
    assert write_body(positive_nan(back), schema) == write_body(positive_nan(datum), schema)


# ---------------------------------------------------------------------------------------------
# Reader schemas
# ---------------------------------------------------------------------------------------------


@SANE
@given(schema_and_datum(record=True), st.sampled_from(FRAMINGS))
def test_reader_schema_fills_added_fields_from_defaults(case: tuple, framing: str) -> None:
    definition, datum = case
    writer = Schema(definition, registry_id=5)
    added = [{"name": "kcp_added_null", "type": ["null", "string"], "default": None},
             {"name": "kcp_added_int", "type": "int", "default": 7}]
    store = _store_for(framing, writer)
    store.reader = Schema({**definition, "fields": definition["fields"] + added})
    (decoded, schema), = decode_payload(encoder_for(framing)(datum, writer), store, framing)
    assert schema is store.reader
    assert decoded.pop("kcp_added_null") is None
    assert decoded.pop("kcp_added_int") == 7
    assert write_body(decoded, writer) == write_body(datum, writer)


# ---------------------------------------------------------------------------------------------
# OCF files: many records per block, every codec
# ---------------------------------------------------------------------------------------------


def _write_zstandard_block(fo: Any, data: bytes, level: Any) -> None:
    fastavro.schemaless_writer(fo, "bytes", bytes(cramjam.zstd.compress(data)))


@pytest.fixture(scope="module", autouse=True)
def fastavro_writes_zstandard() -> Any:
    """fastavro writes zstandard only with backports.zstd; cramjam stands in when it is absent."""
    with pytest.MonkeyPatch.context() as patch:
        try:
            fastavro.writer(io.BytesIO(), "int", [1], codec="zstandard")
        except ValueError:
            patch.setitem(fastavro._write.BLOCK_WRITERS, "zstandard", _write_zstandard_block)
        yield


@st.composite
def schema_and_datums(draw: Callable) -> tuple[Any, list]:
    generator = Generator(draw, json_safe=False)
    root = generator.record(2, None)
    return root.definition, draw(st.lists(root.values, min_size=1, max_size=30))


@settings(SANE, max_examples=40)
@given(schema_and_datums(), st.sampled_from(("null", "deflate", "snappy", "zstandard")),
       st.integers(16, 400))
def test_ocf_files_with_every_codec_read_back(case: tuple, codec: str, sync_interval: int) -> None:
    definition, datums = case
    schema = Schema(definition)
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema.parsed, datums, codec=codec, sync_interval=sync_interval)
    expected = [write_body(d, schema) for d in datums]

    messages = list(FORMATS["avro"].reader(Options()).read_stream(io.BytesIO(buffer.getvalue()),
                                                                   "test.avro"))
    assert [getattr(m, "error", None) for m in messages] == [None] * len(datums)
    assert [write_body(m.datum, m.schema) for m in messages] == expected
    assert [m.position for m in messages] == [f"record {n}" for n in range(1, len(datums) + 1)]

    # The same file as one Kafka payload: the codec's own block reader.
    records = decode_payload(buffer.getvalue(), SchemaStore())
    assert [write_body(d, s) for d, s in records] == expected


# ---------------------------------------------------------------------------------------------
# Logical types read as Python values and written as readable JSON
# ---------------------------------------------------------------------------------------------


def test_logical_types_are_readable_in_json() -> None:
    schema = Schema({"type": "record", "name": "t", "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6,
                                 "scale": 2}},
        {"name": "fixdec", "type": {"type": "fixed", "name": "money", "size": 4,
                                    "logicalType": "decimal", "precision": 8, "scale": 3}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "x", "type": ["null", "double"]},
    ]})
    datum = {"ts": dt.datetime(2018, 7, 25, 4, 32, 11, 123000, tzinfo=UTC),
             "us": dt.datetime(2018, 7, 25, 4, 32, 11, 123456, tzinfo=UTC),
             "local": dt.datetime(2018, 7, 25, 4, 32, 11, 123000),
             "day": dt.date(2018, 7, 25), "ms": dt.time(4, 32, 11, 12000),
             "dec": decimal.Decimal("-1234.56"), "fixdec": decimal.Decimal("12345.678"),
             "id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "x": -math.inf}
    payload = encoder_for("schemaless")(datum, schema)
    (decoded, _), = decode_payload(payload, _store_for("schemaless", schema), "schemaless")
    document = AvroToJson()(decoded, schema)
    assert orjson.loads(document) == {
        "ts": "2018-07-25T04:32:11.123000+00:00", "us": "2018-07-25T04:32:11.123456+00:00",
        "local": "2018-07-25T04:32:11.123000", "day": "2018-07-25", "ms": "04:32:11.012000",
        "dec": "-1234.56", "fixdec": "12345.678", "id": "12345678-1234-5678-1234-567812345678",
        "x": "-Infinity"}
    assert write_body(JsonToAvro()(document, schema), schema) == payload


@pytest.mark.parametrize("value, token", [(math.nan, "NaN"), (-math.nan, "-NaN"),
                                          (math.inf, "Infinity"), (-math.inf, "-Infinity")])
def test_non_finite_floats_are_strings_that_convert_back(value: float, token: str) -> None:
    schema = Schema({"type": "record", "name": "f", "fields": [
        {"name": "f", "type": "float"}, {"name": "d", "type": ["null", "double"]},
        {"name": "a", "type": {"type": "array", "items": "double"}},
        {"name": "m", "type": {"type": "map", "values": ["null", "float"]}}]})
    datum = {"f": value, "d": value, "a": [1.5, value], "m": {"k": value}}
    expected = write_body(datum, schema)
    document = AvroToJson()(copy.deepcopy(datum), schema)
    assert orjson.loads(document) == {"f": token, "d": token, "a": [1.5, token], "m": {"k": token}}
    assert write_body(JsonToAvro()(document, schema), schema) == expected
