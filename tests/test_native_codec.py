"""The native Avro -> JSON transcoder (kcp.codec.native) against the Python path, byte for byte.

Both paths run over every real alert of ../shared/data (skipped when absent), kcp's synthetic
alerts, and hypothesis-generated schemas and datums, in every framing and file, whole and
projected by ``--fields``; the JSON bytes must be equal.  The native program must also have done
the work itself: a fallback to the Python path on any of these inputs fails the test.  Then its
bounds: hostile bodies are errors with a byte position, never a crash.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kcptest import KCP
from test_codec_properties import SANE, schema_and_datum, schema_and_datums
from test_codec_real_data import (
    CORRUPT,
    LEGACY,
    RUBIN_OCF,
    WIRE_FILES,
    ZTF_OCF,
    data_file,
    rubin_store,
)

from kcp.codec import (
    AvroToJson,
    Schema,
    SchemaStore,
    decode_payload,
    load_schema_path,
    native,
    write_body,
)
from kcp.codec.framing import DatumReader, encoder_for
from kcp.codec.limits import Limits
from kcp.codec.native import NativeJson
from kcp.codec.schemas import RubinSchemaTree
from kcp.errors import BadInput
from kcp.formats import FORMATS
from kcp.message import Message
from kcp.options import Options
from kcp.stages import apply, field_tree, project_stage
from kcp.synth import datum_from_schema, iter_alerts, load_ztf_like_schema

pytestmark = pytest.mark.skipif(not native.BUILT,
                                reason="kcp.codec.compiled is not built (no Rust toolchain)")
BYTES_MODES = ("base64", "hex", "size", "omit")


@pytest.fixture(autouse=True)
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every input below must be written by the native program, not handed back to Python."""
    def refuse(*args: Any) -> None:
        raise AssertionError("the native transcoder fell back to the Python path")

    monkeypatch.setattr(NativeJson, "_python_path", refuse)


def both_paths(payload: bytes, store: SchemaStore, framing: str | None = None,
               bytes_mode: str = "base64") -> tuple[list[bytes], list[bytes]]:
    """(Python's JSON, the native JSON) of every record of one payload."""
    to_json = AvroToJson(bytes_mode)
    python = [to_json(datum, schema) for datum, schema in decode_payload(payload, store, framing)]
    transcoder = NativeJson(bytes_mode, DatumReader(store), store.limits)
    documents = decode_payload(payload, store, framing, transcoder)
    return python, [document.text for document, _ in documents]


def assert_same_in_every_framing(datum: Any, schema: Schema, bytes_mode: str = "base64") -> None:
    """One datum written in each framing: both paths write the same JSON."""
    stores = {"ocf": SchemaStore(), "confluent": SchemaStore(), "single-object": SchemaStore(),
              "schemaless": SchemaStore()}
    framed = Schema(schema.definition, registry_id=7)
    stores["confluent"].add(framed)
    stores["single-object"].add(framed)
    stores["schemaless"].default = framed
    for framing, store in stores.items():
        payload = encoder_for(framing)(datum, framed)
        python, natively = both_paths(payload, store, framing, bytes_mode)
        assert natively == python, framing


def file_documents(path: Path, documents: bool, pretty: bool = False, fields: str | None = None
                   ) -> tuple[list[bytes], str | None]:
    """What `kcp consume FILE [--fields FIELDS]` writes for ``path`` on one path, and the error
    that ended it."""
    options = Options(json_documents=documents, bytes_mode="size" if pretty else "base64",
                      pretty=pretty, colour=pretty, fields=fields)
    writer = FORMATS["json"].writer(options)
    stages = [project_stage(fields)] if fields else []
    lines = []
    with path.open("rb") as stream:
        for message in FORMATS["avro"].reader(options).read_stream(stream, str(path)):
            if message.error is not None:
                return lines, type(message.error).__name__
            lines += [writer.encode(kept) for kept in apply(stages, message)]
    return lines, None


def projected(records: Iterable[tuple[Any, Schema]], fields: str, bytes_mode: str = "base64"
              ) -> list[bytes]:
    """What `--fields FIELDS` writes of decoded records: its stage, then the JSON writer."""
    stage = project_stage(fields)
    writer = FORMATS["json"].writer(Options(bytes_mode=bytes_mode))
    return [writer.encode(stage(Message(datum=datum, schema=schema)))
            for datum, schema in records]


def both_paths_projected(payload: bytes, store: SchemaStore, fields: str,
                         framing: str | None = None, bytes_mode: str = "base64"
                         ) -> tuple[list[bytes], list[bytes]]:
    """(Python's JSON, the native JSON) of what `--fields FIELDS` keeps of one payload."""
    python = projected(decode_payload(payload, store, framing), fields, bytes_mode)
    transcoder = NativeJson(bytes_mode, DatumReader(store), store.limits, field_tree(fields))
    natively = decode_payload(payload, store, framing, transcoder)
    return python, projected(natively, fields, bytes_mode)


# ---------------------------------------------------------------------------------------------
# Real alerts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ZTF_OCF + RUBIN_OCF)
def test_real_ocf_alerts_as_payloads_and_files(relative: str) -> None:
    path = data_file(relative)
    payload = path.read_bytes()
    python, natively = both_paths(payload, SchemaStore())
    assert python and natively == python
    assert file_documents(path, True) == file_documents(path, False) == (python, None)


@pytest.mark.parametrize("relative", ZTF_OCF[:6] + RUBIN_OCF[:4])
@pytest.mark.parametrize("bytes_mode", BYTES_MODES)
def test_real_alerts_in_every_framing_and_bytes_mode(relative: str, bytes_mode: str) -> None:
    with data_file(relative).open("rb") as stream:
        reader = fastavro.reader(stream)
        schema = Schema(reader.writer_schema)
        for datum in reader:
            assert_same_in_every_framing(datum, schema, bytes_mode)


@pytest.mark.parametrize("relative", (ZTF_OCF + RUBIN_OCF)[::8])
def test_pretty_coloured_output_for_a_terminal_is_the_same(relative: str) -> None:
    path = data_file(relative)
    native_lines, error = file_documents(path, True, pretty=True)
    assert error is None and native_lines and b"\x1b[" in native_lines[0]
    assert file_documents(path, False, pretty=True) == (native_lines, None)


@pytest.mark.parametrize("relative", sorted(CORRUPT))
def test_corrupt_real_files_keep_the_same_records_before_the_error(
        relative: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # a file block the program stops in is read again by the Python path
    path = data_file(relative)
    native_lines, native_error = file_documents(path, True)
    python_lines, python_error = file_documents(path, False)
    assert native_lines == python_lines
    assert native_error == python_error == "BadInput"


@pytest.mark.parametrize("relative", WIRE_FILES)
def test_rubin_confluent_wire_format(relative: str) -> None:
    python, natively = both_paths(data_file(relative).read_bytes(), rubin_store(), "confluent")
    assert len(python) == 1 and natively == python


def test_legacy_schemaless_ztf() -> None:
    files = sorted(LEGACY.glob("*.avro")) if LEGACY.is_dir() else []
    if not files:
        pytest.skip("no legacy schemaless ZTF files")
    store = SchemaStore()
    store.default = load_schema_path(LEGACY / "schema" / "alert.avsc")
    for path in files:
        python, natively = both_paths(path.read_bytes(), store, "schemaless")
        assert len(python) == 1 and natively == python


@pytest.mark.parametrize("bytes_mode", BYTES_MODES)
def test_synthetic_alerts_in_every_framing(bytes_mode: str) -> None:
    schema = Schema(load_ztf_like_schema())
    for alert in iter_alerts(4, seed=5):
        assert_same_in_every_framing(alert, schema, bytes_mode)


def test_synthetic_night_as_an_ocf_file(tmp_path: Path) -> None:
    schema = Schema(load_ztf_like_schema())
    path = tmp_path / "night.avro"
    with path.open("wb") as out:
        fastavro.writer(out, schema.parsed, list(iter_alerts(40, seed=2)), codec="deflate",
                        sync_interval=200_000)
    native_lines, error = file_documents(path, True)
    assert error is None and len(native_lines) == 40
    assert file_documents(path, False) == (native_lines, None)


# --fields: ZTF's and Rubin's fields, top-level and nested, through nullable records and arrays
# of records; fields a schema lacks; paths into strings and numbers; whole records and cutouts.
ZTF_FIELDS = (
    "objectId,candidate.ra,candidate.dec",
    "candid,candidate.magpsf,candidate.isdiffpos,prv_candidates.jd,prv_candidates.magpsf,"
    "fp_hists.forcediffimflux",
    "cutoutScience.stampData,candidate,objectId.deeper,prv_candidates.nosuch,nosuch.field",
)
RUBIN_FIELDS = (
    "diaSourceId,alertId,diaSource.ra,diaSource.dec,diaObject.ra,diaObject.nosuch",
    "prvDiaSources.midpointMjdTai,prvDiaForcedSources.psfFlux,cutoutDifference,ssObject,"
    "diaSource.ra.deeper",
)
# A file of each folder: each schema version, each producer.
ONE_PER_FOLDER = list({str(Path(p).parent): p for p in reversed(ZTF_OCF + RUBIN_OCF)}.values())


@pytest.mark.parametrize("relative", ONE_PER_FOLDER)
def test_real_alerts_projected_by_fields(relative: str) -> None:
    path = data_file(relative)
    payload = path.read_bytes()
    all_fields = ZTF_FIELDS if relative.startswith("ztf") else RUBIN_FIELDS
    for fields in all_fields:
        python, natively = both_paths_projected(payload, SchemaStore(), fields)
        assert python and b"{}" not in python and natively == python, fields
    assert (file_documents(path, True, fields=fields) == file_documents(path, False, fields=fields)
            == (python, None))


@pytest.mark.parametrize("relative", WIRE_FILES[::3])
def test_rubin_confluent_wire_format_projected_by_fields(relative: str) -> None:
    payload = data_file(relative).read_bytes()
    for fields in RUBIN_FIELDS:
        python, natively = both_paths_projected(payload, rubin_store(), fields, "confluent")
        assert len(python) == 1 and python != [b"{}"] and natively == python


def test_synthetic_night_projected_by_fields(tmp_path: Path) -> None:
    path = tmp_path / "night.avro"
    with path.open("wb") as out:
        fastavro.writer(out, Schema(load_ztf_like_schema()).parsed, list(iter_alerts(8, seed=4)),
                        sync_interval=100_000)
    for fields in ZTF_FIELDS:
        native_lines, error = file_documents(path, True, fields=fields)
        assert error is None and len(native_lines) == 8
        assert file_documents(path, False, fields=fields) == (native_lines, None)


def test_synthetic_rubin_alerts_projected_by_fields() -> None:
    tree = RubinSchemaTree.from_package()
    if tree is None:
        pytest.skip("lsst-alert-packet is not installed")
    schema = Schema(tree.schema_for_id(1000))
    rng = random.Random(10)
    for items in (0, 1, 5):
        payload = encoder_for("ocf")(datum_from_schema(schema.parsed, rng, items=items), schema)
        for fields in RUBIN_FIELDS:
            python, natively = both_paths_projected(payload, SchemaStore(), fields)
            assert python != [b"{}"] and natively == python


def test_fields_of_what_is_not_a_record_are_the_python_paths_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the program declines such a datum: the --fields stage says why
    schema = Schema(["null", {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}]}])
    for datum, expected in ((None, "selects fields of records, not of null"), ({"a": 1}, None)):
        payload = encoder_for("ocf")(datum, schema)
        if expected is None:
            python, natively = both_paths_projected(payload, SchemaStore(), "a,b")
            assert natively == python == [b'{"a":1}']
            continue
        for transcoder in (None, NativeJson("base64", DatumReader(SchemaStore()), Limits(),
                                            field_tree("a"))):
            with pytest.raises(BadInput, match=expected):
                projected(decode_payload(payload, SchemaStore(), None, transcoder), "a")


def test_a_map_holding_a_key_twice_is_left_to_the_python_path_when_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # Python's dict keeps the last value at the first key's place
    store = SchemaStore()
    store.default = Schema({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]})
    body = b"\x04\x02a\x02\x02a\x04\x00"  # {"a": 1, "a": 2}
    for fields, expected in (("m.a", b'{"m":{"a":2}}'), ("m.b", b'{"m":{}}'),
                             ("m", b'{"m":{"a":2}}')):
        python, natively = both_paths_projected(body, store, fields, "schemaless")
        assert natively == python == [expected]


# ---------------------------------------------------------------------------------------------
# Generated schemas and datums
# ---------------------------------------------------------------------------------------------


@settings(SANE)
@given(schema_and_datum(), st.sampled_from(BYTES_MODES))
def test_generated_schemas_every_framing(case: tuple, bytes_mode: str) -> None:
    definition, datum = case
    assert_same_in_every_framing(datum, Schema(definition), bytes_mode)


@settings(SANE, max_examples=30)
@given(schema_and_datums(), st.sampled_from(("null", "deflate")))
def test_generated_ocf_files(tmp_path_factory: pytest.TempPathFactory, case: tuple,
                             codec: str) -> None:
    definition, datums = case
    path = tmp_path_factory.mktemp("ocf") / "records.avro"
    with path.open("wb") as out:
        fastavro.writer(out, Schema(definition).parsed, datums, codec=codec, sync_interval=64)
    native_lines, error = file_documents(path, True)
    assert error is None and len(native_lines) == len(datums)
    assert file_documents(path, False) == (native_lines, None)


def paths_in(value: Any, prefix: str = "", depth: int = 4) -> list[str]:
    """The dotted paths --fields can name in a datum: its records' fields and its maps' keys."""
    paths = []
    if isinstance(value, dict) and depth:
        for key, item in value.items():
            if key and key.strip() == key and "." not in key and "," not in key:
                paths += [prefix + key, *paths_in(item, f"{prefix}{key}.", depth - 1)]
    elif isinstance(value, list):
        for item in value:
            paths += paths_in(item, prefix, depth)
    return paths


@settings(SANE)
@given(schema_and_datum(record=True), st.sampled_from(BYTES_MODES), st.data())
def test_generated_schemas_projected_by_fields(case: tuple, bytes_mode: str,
                                               data: st.DataObject) -> None:
    definition, datum = case
    steps = st.tuples(st.sampled_from([*paths_in(datum), "nosuch"]), st.booleans())
    chosen = data.draw(st.lists(steps, min_size=1, max_size=4))
    # a path of the datum, or one step past it: into a string, a null, a record lacking it
    fields = ",".join(path + (".deeper" if deeper else "") for path, deeper in chosen)
    schema = Schema(definition)
    bare = SchemaStore()
    bare.default = schema
    for framing, store in (("ocf", SchemaStore()), ("schemaless", bare)):
        python, natively = both_paths_projected(encoder_for(framing)(datum, schema), store,
                                                fields, framing, bytes_mode)
        assert natively == python


TREE = {"type": "record", "name": "Tree", "namespace": "kcp.test", "fields": [
    {"name": "value", "type": ["null", "float", "string"]},
    {"name": "stamp", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "children", "type": {"type": "array", "items": "Tree"}},
    {"name": "named", "type": {"type": "map", "values": "kcp.test.Tree"}},
    {"name": "next", "type": ["null", "Tree"]},
]}


def _trees(depth: int) -> st.SearchStrategy:
    leaf_values = st.one_of(st.none(), st.floats(width=32), st.text(max_size=5))
    stamps = st.integers(-2**40, 2**40)
    if depth == 0:
        return st.fixed_dictionaries({"value": leaf_values, "stamp": stamps,
                                      "children": st.just([]), "named": st.just({}),
                                      "next": st.none()})
    inner = _trees(depth - 1)
    return st.fixed_dictionaries({
        "value": leaf_values, "stamp": stamps, "children": st.lists(inner, max_size=2),
        "named": st.dictionaries(st.text(max_size=3), inner, max_size=2),
        "next": st.one_of(st.none(), inner)})


@settings(SANE)
@given(_trees(4))
def test_recursive_schemas(tree: dict) -> None:
    import datetime as dt

    def stamped(node: dict) -> dict:  # fastavro writes timestamps from datetimes or integers
        node["stamp"] = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=node["stamp"])
        for child in [*node["children"], *node["named"].values(), node["next"]]:
            if child is not None:
                stamped(child)
        return node

    assert_same_in_every_framing(stamped(tree), Schema(TREE))


@pytest.mark.parametrize("fields", ["value,next.value,next.next.next", "children.children.stamp",
                                    "named.a.value,named.b,children.named.a.next.value"])
def test_recursive_schemas_projected_by_fields(fields: str) -> None:
    def tree(value: Any, children: list, named: dict, next_: dict | None = None) -> dict:
        return {"value": value, "stamp": 1, "children": children, "named": named, "next": next_}

    leaf = tree(1.5, [], {})
    datum = tree("top", [tree(None, [leaf, leaf], {"a": leaf}), leaf],
                 {"a": tree(-0.5, [], {}, tree(2.5, [], {})), "b": leaf, "c": leaf},
                 tree("x", [leaf], {}, tree("y", [], {}, leaf)))
    python, natively = both_paths_projected(encoder_for("ocf")(datum, Schema(TREE)),
                                            SchemaStore(), fields)
    assert natively == python and python[0] != b"{}"


@pytest.mark.parametrize("value", [float("nan"), -float("nan"), float("inf"), -float("inf"),
                                   0.0, -0.0, 1e16, 1e-7, 5e-324, 0.1])
def test_non_finite_and_edge_floats(value: float) -> None:
    schema = Schema({"type": "record", "name": "F", "fields": [
        {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
        {"name": "n", "type": ["null", "double"]}, {"name": "a", "type": {"type": "array",
                                                                        "items": "float"}},
        {"name": "m", "type": {"type": "map", "values": ["null", "float"]}}]})
    f32 = struct.unpack("<f", struct.pack("<f", value))[0] if value == value else value
    assert_same_in_every_framing({"f": f32, "d": value, "n": value, "a": [f32, f32, 1.5],
                                  "m": {"x": f32, "y": None}}, schema)


# ---------------------------------------------------------------------------------------------
# Bounds: hostile bodies
# ---------------------------------------------------------------------------------------------

ALERTISH = Schema({"type": "record", "name": "A", "fields": [
    {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
    {"name": "history", "type": ["null", {"type": "array", "items": {
        "type": "record", "name": "P", "fields": [{"name": "mag", "type": ["null", "float"]}]}}]},
    {"name": "nothing", "type": {"type": "array", "items": "null"}},
    {"name": "cutout", "type": ["null", "bytes"]}]})
GOOD = write_body({"id": 1, "name": "x", "history": [{"mag": 1.5}] * 3, "nothing": [None],
                   "cutout": b"\x00" * 10}, ALERTISH)


def native_error(body: bytes, fields: str | None = None) -> str:
    transcoder = NativeJson("base64", DatumReader(SchemaStore()), Limits(),
                            field_tree(fields) if fields else None)
    with pytest.raises(BadInput) as caught:
        transcoder.exactly(body, ALERTISH)
    return str(caught.value)


@pytest.mark.parametrize("cut", range(len(GOOD)))
def test_every_truncation_is_an_error_with_its_position(cut: int) -> None:
    assert "at byte" in native_error(GOOD[:cut])
    # with --fields, in the fields skipped too
    assert "at byte" in native_error(GOOD[:cut], "id,history.mag")


def test_skipped_fields_are_read_within_the_same_bounds() -> None:
    # history, skipped: an array block declaring 2**40 records in a few bytes
    body = b"\x02\x02x" + b"\x02" + fastavro_long(2**40) + b"\x00" * 8
    assert "at byte 4 of the body: block declares" in native_error(body, "id")
    # cutout, skipped: bytes longer than the body
    body = b"\x02\x02x\x00\x00\x02" + fastavro_long(10**9)
    assert "truncated Avro datum at byte 11" in native_error(body, "name")
    # name, skipped: not UTF-8, which the Python path refuses too
    assert "invalid UTF-8" in native_error(b"\x02\x02\xff\x00\x00\x00", "id")
    # an array of nulls, skipped: its count has its ceiling
    body = b"\x02\x02x\x00" + fastavro_long(2**40) + b"\x00\x00"
    assert "takes no bytes" in native_error(body, "id")


def test_declared_counts_are_checked_against_the_bytes_left() -> None:
    # history: branch 1, then an array block declaring 2**40 records in a few bytes.
    body = b"\x02\x02x" + b"\x02" + fastavro_long(2**40) + b"\x00" * 8
    assert "only" in native_error(body) and "bytes remain" in native_error(body)
    # An array of nulls takes no bytes per item: its count has a ceiling of its own.
    body = b"\x02\x02x\x00" + fastavro_long(2**40) + b"\x00\x00"
    assert "takes no bytes" in native_error(body)
    # A bytes field longer than the body.
    body = b"\x02\x02x\x00\x00\x02" + fastavro_long(10**9)
    assert "truncated" in native_error(body)


def test_nesting_depth_is_bounded() -> None:
    deep: dict = {"value": None, "stamp": 0, "children": [], "named": {}, "next": None}
    for _ in range(Limits().max_depth + 5):
        deep = {"value": None, "stamp": 0, "children": [], "named": {}, "next": deep}
    body = write_body(deep, Schema(TREE))
    transcoder = NativeJson("base64", DatumReader(SchemaStore()), Limits())
    with pytest.raises(BadInput, match="nested deeper than"):
        transcoder.exactly(body, Schema(TREE))


@settings(SANE, max_examples=300)
@given(st.binary(max_size=200), st.sampled_from([None, "name", "id,history.mag.x,cutout"]))
def test_random_bodies_never_crash(body: bytes, fields: str | None) -> None:
    projection = field_tree(fields) if fields else None
    program = NativeJson("base64", DatumReader(SchemaStore()), Limits(),
                         projection).program(ALERTISH)
    texts, end, problem = program.transcode(body, 1)
    assert 0 <= end <= len(body)
    if problem is None:
        assert len(texts) == 1
    else:  # malformed, or valid in a way only Python writes exactly (a negative union index)
        assert problem[0] in ("bad", "truncated", "unsupported") and 0 <= problem[2] <= len(body)


def fastavro_long(value: int) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# The installed command
# ---------------------------------------------------------------------------------------------


def test_version_names_the_codec_and_kcp_native_0_turns_it_off() -> None:
    on = subprocess.run([KCP, "--version"], capture_output=True, text=True, check=True,
                        env={**os.environ, "KCP_NATIVE": "1"}).stdout  # the suite may run with 0
    off = subprocess.run([KCP, "--version"], capture_output=True, text=True, check=True,
                         env={**os.environ, "KCP_NATIVE": "0"}).stdout
    assert on.strip().endswith("(native codec)") and off.strip().endswith("(python codec)")


def test_consume_a_file_writes_the_same_bytes_on_both_paths(tmp_path: Path) -> None:
    path = tmp_path / "night.avro"
    with path.open("wb") as out:
        fastavro.writer(out, Schema(load_ztf_like_schema()).parsed, list(iter_alerts(5, seed=3)))
    outputs = [subprocess.run(f"{KCP} convert --bytes hex < {path.name} | cat", shell=True,
                              cwd=tmp_path, capture_output=True, check=True,
                              env={**os.environ, "KCP_NATIVE": flag}).stdout
               for flag in ("1", "0")]
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 5


def test_consume_a_file_with_fields_writes_the_same_bytes_on_both_paths(tmp_path: Path) -> None:
    path = tmp_path / "night.avro"
    with path.open("wb") as out:
        fastavro.writer(out, Schema(load_ztf_like_schema()).parsed, list(iter_alerts(5, seed=3)))
    command = (f"{KCP} convert --fields objectId,candidate.ra,prv_candidates.magpsf,nosuch "
               f"< {path.name} | cat")
    outputs = [subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                              check=True, env={**os.environ, "KCP_NATIVE": flag}).stdout
               for flag in ("1", "0")]
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 5
    assert outputs[0].startswith(b'{"objectId":"ZTF')
