"""Example tests of the codec core: schema sources, caches, detection errors, the JSON inverse."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from kcptest import LoopbackRegistry

from kcp.codec import (
    AvroToJson,
    JsonToAvro,
    RegistryClient,
    RubinSchemaTree,
    Schema,
    SchemaStore,
    decode_payload,
    encoder_for,
    load_schema_path,
    write_body,
)
from kcp.errors import BadInput, TransportError, UsageError

RECORD = {"type": "record", "name": "alert", "namespace": "test",
          "fields": [{"name": "id", "type": "long"},
                     {"name": "mag", "type": ["null", "float"], "default": None}]}
DATUM = {"id": 42, "mag": 18.5}

# ---------------------------------------------------------------------------------------------
# Detection, and what each framing says when it cannot read a payload
# ---------------------------------------------------------------------------------------------


def test_a_payload_in_no_framing_shows_its_bytes_and_the_framings_tried() -> None:
    with pytest.raises(BadInput) as caught:
        decode_payload(b"\x17\x2a garbage, not Avro", SchemaStore())
    message = str(caught.value)
    assert "17 2a 20 67 61 72 62 61 67 65" in message
    assert "tried ocf, confluent, single-object, schemaless" in message
    assert "\n" not in message


@pytest.mark.parametrize("framing, payload, expected", [
    ("confluent", b"\x00\x00\x01", "shorter than its 5-byte header"),
    ("confluent", b"\x00\x00\x00\x00\x07\x54", "unknown schema id 7 "),
    ("single-object", b"\xc3\x01\x01", "shorter than its 10-byte header"),
    ("single-object", b"\xc3\x01" + bytes(8) + b"\x54", "fingerprint 0000000000000000"),
    ("ocf", b"Obj\x01\x02", "truncated"),
])
def test_forced_framings_fail_cleanly(framing: str, payload: bytes, expected: str) -> None:
    with pytest.raises(BadInput, match=expected):
        decode_payload(payload, SchemaStore(), framing)


def test_schemaless_without_a_schema_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--schema"):
        decode_payload(b"\x54", SchemaStore(), "schemaless")


def test_bytes_left_over_after_the_datum_are_an_error() -> None:
    store = SchemaStore()
    store.default = Schema(RECORD)
    with pytest.raises(BadInput, match="1 bytes left over"):
        decode_payload(write_body(DATUM, store.default) + b"\x00", store, "schemaless")


def test_a_bare_body_starting_with_zero_is_not_taken_for_a_frame() -> None:
    schema = Schema({"type": "record", "name": "r", "fields": [
        {"name": "a", "type": ["null", "long"]}, {"name": "b", "type": "string"}]})
    store = SchemaStore()
    store.default = schema
    bare = write_body({"a": None, "b": "confluent-looking body"}, schema)
    assert bare[:1] == b"\x00"
    (datum, _), = decode_payload(bare, store)
    assert datum == {"a": None, "b": "confluent-looking body"}
    # And a real frame whose id no source knows is read with the user's schema.
    framed = b"\x00\x00\x00\x04\x4d" + bare
    (datum, _), = decode_payload(framed, store)
    assert datum == {"a": None, "b": "confluent-looking body"}


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_single_object_header_is_the_spec_fingerprint_little_endian() -> None:
    schema = Schema(RECORD)
    canonical = ('{"name":"test.alert","type":"record","fields":[{"name":"id","type":"long"},'
                 '{"name":"mag","type":["null","float"]}]}')
    assert schema.fingerprint == crc64_avro(canonical.encode())
    payload = encoder_for("single-object")(DATUM, schema)
    assert payload[:10] == b"\xc3\x01" + crc64_avro(canonical.encode()).to_bytes(8, "little")
    store = SchemaStore()
    store.add(Schema(json.loads(json.dumps(RECORD, indent=3))))  # the same schema, other text
    (datum, _), = decode_payload(payload, store)
    assert datum == DATUM


def test_confluent_id_is_big_endian() -> None:
    payload = encoder_for("confluent")(DATUM, Schema(RECORD, registry_id=1101))
    assert payload[:5] == b"\x00\x00\x00\x04\x4d"


def test_confluent_framing_needs_an_id() -> None:
    with pytest.raises(UsageError, match="--schema-id"):
        encoder_for("confluent")(DATUM, Schema(RECORD))


def test_a_record_that_does_not_fit_its_schema_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"does not match schema test\.alert"):
        write_body({"id": "not a long"}, Schema(RECORD))


# ---------------------------------------------------------------------------------------------
# The schema cache
# ---------------------------------------------------------------------------------------------


def test_the_same_header_text_is_parsed_once() -> None:
    store = SchemaStore()
    encode = encoder_for("ocf")
    first = decode_payload(encode(DATUM, Schema(RECORD)), store)[0][1]
    again = decode_payload(encode({"id": 1, "mag": None}, Schema(RECORD)), store)[0][1]
    assert again is first and len(store._by_text) == 1
    # Another writer's whitespace and key order: another text, the same Schema.
    spaced = Schema(json.loads(json.dumps(RECORD, indent=2, sort_keys=True)))
    assert decode_payload(encode(DATUM, spaced), store)[0][1] is first


def test_schemas_differing_only_in_logical_types_are_not_confused() -> None:
    def with_scale(scale: int) -> Schema:
        return Schema({"type": "record", "name": "r", "fields": [{"name": "d", "type": {
            "type": "bytes", "logicalType": "decimal", "precision": 9, "scale": scale}}]})

    encode, store = encoder_for("ocf"), SchemaStore()
    cents = decode_payload(encode({"d": decimal.Decimal("1.23")}, with_scale(2)), store)
    units = decode_payload(encode({"d": decimal.Decimal("123")}, with_scale(0)), store)
    # Both have one Parsing Canonical Form (it drops logical types), not one meaning.
    assert cents[0][1].fingerprint == units[0][1].fingerprint
    assert cents[0][0]["d"] == decimal.Decimal("1.23")
    assert units[0][0]["d"] == decimal.Decimal("123")


SHAPES = [({"type": "record", "name": "a", "fields": [{"name": "x", "type": "double"}]},
           {"x": float("nan")}),
          ({"type": "record", "name": "b", "fields": [
              {"name": "y", "type": {"type": "array", "items": "double"}},
              {"name": "z", "type": "bytes"}]}, {"y": [-1.5], "z": b"\xff"})]


@pytest.mark.parametrize("use", ["to json", "from json", "ocf header"])
def test_caches_are_not_fooled_by_a_reused_object_id(use: str) -> None:
    # Caches keyed by id(schema) held no reference: each schema freed below left its id to the
    # next one, of the other shape, and its converters or OCF header with it.
    to_json, from_json, to_ocf = AvroToJson(), JsonToAvro(), encoder_for("ocf")
    for _ in range(20):
        for definition, datum in SHAPES:
            schema = Schema(definition)
            body = write_body(datum, schema)
            if use == "to json":
                assert orjson.loads(to_json(dict(datum), schema)).keys() == datum.keys()
            elif use == "from json":
                document = AvroToJson()(dict(datum), schema)  # a one-off: it keeps nothing
                assert write_body(from_json(document, schema), schema) == body
            else:
                (again,) = fastavro.reader(io.BytesIO(to_ocf(datum, schema)))
                assert write_body(again, schema) == body
            del schema


# ---------------------------------------------------------------------------------------------
# Schema sources: .avsc files and folders, Rubin's tree, a registry
# ---------------------------------------------------------------------------------------------


def _write(folder: Path, name: str, definition: Any) -> None:
    (folder / name).write_text(json.dumps(definition))


@pytest.fixture
def ztf_like(tmp_path: Path) -> Path:
    """A ZTF-style folder: alert.avsc names types defined in its sibling files."""
    _write(tmp_path, "candidate.avsc", {"namespace": "ztf.alert", "type": "record",
                                        "name": "candidate", "fields": [
                                            {"name": "jd", "type": "double"}]})
    _write(tmp_path, "cutout.avsc", {"namespace": "ztf.alert", "type": "record",
                                     "name": "cutout", "fields": [
                                         {"name": "stampData", "type": "bytes"}]})
    _write(tmp_path, "alert.avsc", {"namespace": "ztf", "type": "record", "name": "alert",
                                    "fields": [
                                        {"name": "candidate", "type": "ztf.alert.candidate"},
                                        {"name": "prv", "type": ["null", {
                                            "type": "array", "items": "ztf.alert.candidate"}]},
                                        {"name": "cutoutScience",
                                         "type": ["null", "ztf.alert.cutout"]},
                                        {"name": "cutoutTemplate",
                                         "type": ["null", "ztf.alert.cutout"]}]})
    return tmp_path


def test_a_folder_of_avsc_files_is_one_self_contained_schema(ztf_like: Path) -> None:
    schema = load_schema_path(ztf_like)
    assert schema.name == "ztf.alert"
    assert load_schema_path(ztf_like / "alert.avsc").fingerprint == schema.fingerprint
    fastavro.parse_schema(json.loads(schema.text))  # parses alone, as an OCF header must
    datum = {"candidate": {"jd": 2458000.5}, "prv": [{"jd": 1.0}], "cutoutScience": None,
             "cutoutTemplate": {"stampData": b"\x1f\x8b"}}
    (again, _), = decode_payload(encoder_for("ocf")(datum, schema), SchemaStore())
    assert again == datum


def test_a_folder_with_two_roots_asks_for_the_file(ztf_like: Path) -> None:
    _write(ztf_like, "other.avsc", {"type": "record", "name": "other", "fields": []})
    with pytest.raises(UsageError, match=r"alert\.avsc, other\.avsc"):
        load_schema_path(ztf_like)
    assert load_schema_path(ztf_like / "alert.avsc").name == "ztf.alert"


def test_a_missing_named_type_is_a_usage_error(ztf_like: Path) -> None:
    (ztf_like / "cutout.avsc").unlink()
    with pytest.raises(UsageError, match=r"ztf\.alert\.cutout"):
        load_schema_path(ztf_like / "alert.avsc")
    with pytest.raises(UsageError, match="no such schema"):
        load_schema_path(ztf_like / "nope.avsc")


def test_rubin_tree_ids_are_major_times_100_plus_minor(tmp_path: Path) -> None:
    for major, minor in ((7, 4), (10, 0)):
        folder = tmp_path / str(major) / str(minor)
        folder.mkdir(parents=True)
        _write(folder, f"lsst.v{major}_{minor}.alert.avsc",
               {"namespace": f"lsst.v{major}_{minor}", "type": "record", "name": "alert",
                "fields": [{"name": "diaSourceId", "type": "long"}]})
    store = SchemaStore()
    store.add_id_resolver(RubinSchemaTree(tmp_path))
    assert store.by_id(704).name == "lsst.v7_4.alert"
    assert store.by_id(1000).name == "lsst.v10_0.alert"
    assert store.by_id(1000) is store.by_id(1000)
    assert store.by_id(703) is None
    payload = b"\x00\x00\x00\x02\xc0" + write_body({"diaSourceId": 5}, store.by_id(704))
    assert decode_payload(payload, store) == [({"diaSourceId": 5}, store.by_id(704))]


REGISTERED = {1: json.dumps(RECORD),
              2: json.dumps({"type": "record", "name": "x", "fields": [
                  {"name": "s", "type": "string"}]})}


@pytest.fixture
def registry_server() -> Iterator[LoopbackRegistry]:
    with LoopbackRegistry(REGISTERED) as server:
        yield server


@pytest.fixture
def registry(registry_server: LoopbackRegistry) -> str:
    return registry_server.url


def test_the_test_registry_speaks_confluents_protocol(registry: str) -> None:
    pytest.importorskip("confluent_kafka.schema_registry", exc_type=ImportError)
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient({"url": registry})
    assert json.loads(client.get_schema(1).schema_str) == RECORD
    with pytest.raises(SchemaRegistryError) as caught:
        client.get_schema(99)
    assert caught.value.http_status_code == 404
    assert caught.value.error_code == 40403


def test_registry_ids_decode_confluent_payloads(registry_server: LoopbackRegistry) -> None:
    registry = registry_server.url
    pytest.importorskip("confluent_kafka.schema_registry", exc_type=ImportError)
    store = SchemaStore()
    store.add_id_resolver(RegistryClient(registry))
    payload = encoder_for("confluent")(DATUM, Schema(RECORD, registry_id=1))
    for _ in range(3):
        (datum, schema), = decode_payload(payload, store)
        assert datum == DATUM and schema.registry_id == 1
    assert registry_server.hits == ["/schemas/ids/1"]  # asked once
    with pytest.raises(BadInput, match=r"^unknown schema id 99 "):
        decode_payload(b"\x00\x00\x00\x00\x63\x00", store)


def test_an_unreachable_registry_is_a_transport_error() -> None:
    pytest.importorskip("confluent_kafka.schema_registry", exc_type=ImportError)
    with LoopbackRegistry({}) as server:
        pass  # stopped: a port where nothing listens
    client = RegistryClient(server.url)
    with pytest.raises(TransportError, match="unreachable"):
        client.schema_for_id(1)


def test_registry_without_confluents_registry_extra_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)
    with pytest.raises(UsageError, match=r"confluent-kafka\[schemaregistry\]"):
        RegistryClient("http://127.0.0.1:1")


# ---------------------------------------------------------------------------------------------
# Reader schemas
# ---------------------------------------------------------------------------------------------


def _evolve(fields: list[dict]) -> Schema:
    return Schema({"type": "record", "name": "alert", "namespace": "test", "fields": fields})


@pytest.mark.parametrize("reader_fields, mag, field", [
    ([{"name": "id", "type": "string"}], 1.5, "id"),
    ([{"name": "id", "type": "long"}, {"name": "new", "type": "string"}], 1.5, "new"),
    ([{"name": "id", "type": "long"}, {"name": "mag", "type": "float"}], None, "mag"),
    ([{"name": "id", "type": "long"},
      {"name": "mag", "type": ["null", {"type": "record", "name": "m", "fields": [
          {"name": "v", "type": "float"}]}]}], 1.5, "mag"),
])
def test_an_incompatible_reader_names_the_field(reader_fields: list, mag: float | None,
                                                field: str) -> None:
    store = SchemaStore()
    store.reader = _evolve(reader_fields)
    payload = encoder_for("ocf")({"id": 42, "mag": mag}, Schema(RECORD))
    with pytest.raises(BadInput, match=rf"cannot be read as schema test\.alert: field {field} "):
        decode_payload(payload, store)


def test_incompatible_nested_fields_are_named_by_their_path() -> None:
    def nested(kind: str) -> Schema:
        return _evolve([{"name": "prv", "type": {"type": "array", "items": {
            "type": "record", "name": "prv", "fields": [{"name": "flux", "type": kind}]}}}])

    store = SchemaStore()
    store.default, store.reader = nested("double"), nested("int")
    payload = write_body({"prv": [{"flux": 1.5}]}, store.default)
    with pytest.raises(BadInput, match=r": field prv\[\]\.flux has a type"):
        decode_payload(payload, store, "schemaless")


def test_a_compatible_reader_promotes_and_fills_defaults() -> None:
    store = SchemaStore()
    store.reader = _evolve([{"name": "id", "type": "double"},
                            {"name": "band", "type": "string", "default": "g"},
                            {"name": "mag", "type": ["null", "double"], "default": None}])
    for framing in ("ocf", "schemaless"):
        if framing == "schemaless":
            store.default = Schema(RECORD)
        payload = encoder_for(framing)(DATUM, Schema(RECORD))
        (datum, schema), = decode_payload(payload, store, framing)
        assert schema is store.reader
        assert datum == {"id": 42.0, "mag": 18.5, "band": "g"}


# ---------------------------------------------------------------------------------------------
# JSON: the inverse names the field that does not fit; bytes modes
# ---------------------------------------------------------------------------------------------

NESTED = Schema({"type": "record", "name": "r", "fields": [
    {"name": "candidate", "type": {"type": "record", "name": "c", "fields": [
        {"name": "fluxes", "type": {"type": "array", "items": "double"}},
        {"name": "flags", "type": {"type": "map", "values": "boolean"}},
        {"name": "band", "type": {"type": "enum", "name": "b", "symbols": ["g", "r"]}},
        {"name": "stamp", "type": ["null", "bytes"]}]}},
    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}}]})


def nested_datum() -> dict:
    """A fresh datum each time: AvroToJson rewrites NaN floats in place."""
    return {"candidate": {"fluxes": [1.0, float("nan")], "flags": {"ok": True}, "band": "r",
                          "stamp": b"\x00\xff"},
            "when": dt.datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC)}


@pytest.mark.parametrize("path, value, message", [
    (("candidate", "fluxes", 1), "many", "field candidate.fluxes[1]: expected a number"),
    (("candidate", "flags", "ok"), 1, "field candidate.flags.ok: expected boolean"),
    (("candidate", "band"), "z", "field candidate.band: expected one of ['g', 'r']"),
    (("candidate", "stamp"), "%%%", "field candidate.stamp: expected base64 bytes"),
    (("candidate",), [], "field candidate: expected record c"),
    (("when",), "yesterday", "field when: expected an ISO-8601 timestamp"),
])
def test_json_that_does_not_fit_names_the_field(path: tuple, value: Any, message: str) -> None:
    document = orjson.loads(AvroToJson()(nested_datum(), NESTED))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        JsonToAvro()(orjson.dumps(document), NESTED)


ENUM_A = {"type": "enum", "name": "e", "symbols": ["A"]}


@pytest.mark.parametrize("union, value", [
    ([{"type": "array", "items": "float"}, "boolean"], False),
    ([{"type": "array", "items": "float"}, ENUM_A], "A"),
    ([{"type": "array", "items": "float"}, {"type": "map", "values": "long"}], {}),
    ([ENUM_A, {"type": "record", "name": "f", "fields": [{"name": "f", "type": "float"}]}], "A"),
    (["double", {"type": "array", "items": "double"}], [float("nan"), 1.0]),
    (["null", {"type": "map", "values": "double"}, "string"], {"k": float("-inf")}),
])
def test_each_union_value_is_converted_by_its_own_branch(union: list, value: Any) -> None:
    schema = Schema({"type": "record", "name": "u", "fields": [{"name": "v", "type": union}]})
    expected = write_body({"v": value}, schema)
    document = AvroToJson()({"v": copy.deepcopy(value)}, schema)
    orjson.loads(document)  # strict JSON: the NaN became a string, not null
    assert write_body(JsonToAvro()(document, schema), schema) == expected


def test_invalid_json_is_bad_input() -> None:
    with pytest.raises(BadInput, match="invalid JSON"):
        JsonToAvro()(b"{not json", NESTED)
    with pytest.raises(BadInput, match="not Avro-JSON"):
        JsonToAvro(style="avro")(b"{not json", NESTED)


@pytest.mark.parametrize("mode, shown", [("base64", "AP8="), ("hex", "00ff"), ("size", 2),
                                         ("omit", None)])
def test_bytes_modes(mode: str, shown: Any) -> None:
    document = AvroToJson(mode)(nested_datum(), NESTED)
    assert orjson.loads(document)["candidate"]["stamp"] == shown
    if mode == "size":  # one-way: there are no bytes left to restore
        with pytest.raises(BadInput, match=r"field candidate\.stamp"):
            JsonToAvro(mode)(document, NESTED)
    elif mode == "omit":  # one-way: a nullable field comes back null
        assert JsonToAvro(mode)(document, NESTED)["candidate"]["stamp"] is None
    else:
        back = JsonToAvro(mode)(document, NESTED)
        assert write_body(back, NESTED) == write_body(nested_datum(), NESTED)


def test_unknown_modes_and_styles_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        AvroToJson("base32")
    with pytest.raises(UsageError):
        AvroToJson(style="yaml")


def test_plain_json_without_a_schema_still_has_no_bare_nan() -> None:
    assert orjson.loads(AvroToJson()({"a": [float("nan"), float("-inf")]}, None)) == {
        "a": ["NaN", "-Infinity"]}
