"""The codec core against every real alert file in ../shared/data (facts in its PROVENANCE.md).

The data stays where it is (its licenses differ); every test skips when the folder is absent.
"""

from __future__ import annotations

import copy
import gzip
import io
import itertools
import re
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from kcptest import positive_nan

from kcp.codec import (
    AvroToJson,
    JsonToAvro,
    RubinSchemaTree,
    Schema,
    SchemaStore,
    decode_payload,
    load_schema_path,
    write_body,
)
from kcp.codec import schemas as schemas_module
from kcp.codec.framing import iter_ocf_blocks, parse_ocf_header
from kcp.codec.limits import Limits
from kcp.errors import BadInput
from kcp.formats import FORMATS
from kcp.options import Options
from kcp.transports.file import read_messages

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no real data at {DATA}")

ZTF_SCHEMAS = DATA / "ztf" / "ztf-avro-alert" / "schema"
LEGACY = DATA / "ztf" / "ztf-avro-alert" / "legacy_schemaless_2017-03-30"
RUBIN_SCHEMAS = DATA / "lsst" / "alert_packet" / "schema"
RUBIN_11_1 = DATA / "lsst" / "pittgoogle-client" / "schema_11_1"
WIRE = DATA / "lsst" / "pittgoogle-client" / "wire_format"

# PROVENANCE.md: the corrupt files, and how many records fastavro reads before failing.
CORRUPT = {
    "ztf/ampel-ztf/ztf_public_20180601/516401801315010009.avro": 1,  # sync marker not found
    "ztf/ampel-ztf/ztf_public_20180601/516442330015015017.avro": 1,
    "ztf/ampel-ztf/ztf_public_20180601/516476004815015005.avro": 1,
    "ztf/ampel-ztf/ztf_public_20180601/516434762915010006.avro": 0,  # bad union branch index
    "ztf/ampel-ztf/ztf_public_20180601/516442805615015004.avro": 0,
    "ztf/ampel-ztf/ipac_simulated/121540793515135009.avro": 0,
    "ztf/ampel-ztf-archive/schema_4.02.avro": 1,  # one good block, then trailing garbage
}


def _relative(paths: Iterator[Path]) -> list[str]:
    return sorted(str(p.relative_to(DATA)) for p in paths) if DATA.is_dir() else []


ZTF_OCF = [p for p in _relative((DATA / "ztf").rglob("*.avro"))
           if p not in CORRUPT and "legacy_schemaless" not in p]
RUBIN_OCF = [p for p in _relative((DATA / "lsst").rglob("*.avro")) if "/wire_format/" not in p]
WIRE_FILES = _relative(WIRE.glob("lsst.v*.avro"))
TARBALLS = _relative((DATA / "ztf_tar").glob("*"))


def data_file(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"{relative} is not in this copy of the data")
    return path


def tar_members(relative: str) -> list[tuple[str, bytes]]:
    with tarfile.open(data_file(relative), "r:*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def same(a: Any, b: Any) -> bool:
    """Equal, with floats compared bit for bit (so NaN equals NaN of the same sign)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def read_file(path: Path) -> tuple[list[Any], BadInput | None]:
    """The records kcp's file reader yields for ``path``, and the error that ended it, if any."""
    datums: list[Any] = []
    with path.open("rb") as stream:
        try:
            for message in FORMATS["avro"].reader(Options()).read_stream(stream, str(path)):
                if getattr(message, "error", None) is not None:  # handed to --on-error
                    return datums, message.error
                datums.append(message.datum)
        except BadInput as exc:
            return datums, exc
    return datums, None


def rubin_store() -> SchemaStore:
    """Rubin's registry ids resolved offline: alert_packet's tree, and v11.1 beside it."""
    store = SchemaStore()
    store.add_id_resolver(RubinSchemaTree(RUBIN_SCHEMAS))
    store.add_id_resolver(Flat11_1())
    return store


class Flat11_1:
    """v11.1 is not in the alert_packet snapshot: pittgoogle's flat copy resolves its id."""

    def schema_for_id(self, schema_id: int) -> Any:
        if schema_id != 1101:
            return None
        return load_schema_path(RUBIN_11_1 / "lsst.v11_1.alert.avsc").definition


# ---------------------------------------------------------------------------------------------
# OCF: every ZTF and Rubin container file, as fastavro reads it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ZTF_OCF + RUBIN_OCF)
def test_ocf_file_reads_as_fastavro_does(relative: str) -> None:
    path = data_file(relative)
    data = path.read_bytes()
    expected = list(fastavro.reader(io.BytesIO(data)))
    records = decode_payload(data, SchemaStore())  # as a Kafka payload
    assert same([d for d, _ in records], expected)
    read, error = read_file(path)  # as a file
    assert error is None and same(read, expected)


@pytest.mark.parametrize("relative", TARBALLS)
def test_tar_members_read_as_fastavro_does(relative: str) -> None:
    store = SchemaStore()
    members = tar_members(relative)
    assert members
    for name, data in members:
        (datum, _), = decode_payload(data, store)
        (expected,) = list(fastavro.reader(io.BytesIO(data)))
        assert same(datum, expected), name


@pytest.mark.parametrize("relative", sorted(CORRUPT))
def test_corrupt_files_fail_with_one_clean_line(relative: str) -> None:
    path = data_file(relative)
    data = path.read_bytes()
    with pytest.raises(BadInput) as caught:
        decode_payload(data, SchemaStore())
    assert "\n" not in str(caught.value)

    good = CORRUPT[relative]
    expected = list(itertools.islice(fastavro.reader(io.BytesIO(data)), good))
    read, error = read_file(path)
    assert same(read, expected)
    assert isinstance(error, BadInput)
    message = str(error)
    assert "\n" not in message and len(message) < 300
    assert message.startswith(f"{path}:record {good + 1}: ")


def test_trailing_garbage_after_a_good_block_is_reported_as_such() -> None:
    path = data_file("ztf/ampel-ztf-archive/schema_4.02.avro")
    read, error = read_file(path)
    assert len(read) == 1 and "truncated or trailing garbage" in str(error)
    with pytest.raises(BadInput, match="sync marker"):
        decode_payload(path.read_bytes(), SchemaStore())


def test_multi_record_fink_files() -> None:
    counts = {"ztf/fink-client/avro_multi_alerts.avro": 11,
              "ztf/fink-client/avro_multi_alerts_other.avro": 3,
              "ztf/fink-client/part-3-305711.avro": 31}
    present = {k: v for k, v in counts.items() if (DATA / k).is_file()}
    if not present:
        pytest.skip("no multi-record Fink file in this copy of the data")
    for relative, count in present.items():
        records = decode_payload((DATA / relative).read_bytes(), SchemaStore())
        assert len(records) == count
        assert len({id(schema) for _, schema in records}) == 1
        assert len(read_file(DATA / relative)[0]) == count


def test_deflate_ocf_of_the_alert_stream_simulator() -> None:
    path = data_file("lsst/alert-stream-simulator/sample_10_alert.avro")
    data = path.read_bytes()
    assert fastavro.reader(io.BytesIO(data)).codec == "deflate"
    records = decode_payload(data, SchemaStore())
    assert len(records) == 10
    assert same([d for d, _ in records], list(fastavro.reader(io.BytesIO(data))))


@pytest.mark.parametrize("relative", ["lsst/elasticc/alert_mjd60673.2244_obj1198_src2396011.avro",
                                      "lsst/elasticc/alert_mjd60674.0512_obj747_src1494043.avro.gz"])
def test_elasticc_plain_and_gzipped(relative: str) -> None:
    path = data_file(relative)
    raw = path.read_bytes()
    expected = list(fastavro.reader(io.BytesIO(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b"
                                               else raw)))
    with path.open("rb") as stream:
        messages = list(read_messages(stream, str(path), None, Options()))
    assert same([m.datum for m in messages], expected)
    assert messages[0].schema.name == "elasticc.v0_9.alert"


def test_a_night_of_alerts_parses_its_schema_once(monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted((DATA / "ztf/fink-broker/datasim_v3.2_obs2018-11-29").glob("*.avro"))
    if not files:
        pytest.skip("no datasim night in this copy of the data")
    parses = []
    real_parse = schemas_module.fastavro.parse_schema
    monkeypatch.setattr(schemas_module.fastavro, "parse_schema",
                        lambda *a, **k: parses.append(1) or real_parse(*a, **k))
    store = SchemaStore()
    seen = {id(decode_payload(f.read_bytes(), store)[0][1]) for f in files}
    assert len(files) > 20
    assert len(parses) == 1 and len(seen) == 1
    assert len(store._by_text) == 1


# ---------------------------------------------------------------------------------------------
# Schemaless and Confluent payloads, with schemas from .avsc files, folders and Rubin's tree
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["87704463155000", "87704463155001", "87704463155002"])
def test_legacy_schemaless_samples_decode_with_their_avsc_folder(name: str) -> None:
    data = data_file(f"{LEGACY.relative_to(DATA)}/{name}.avro").read_bytes()
    named: dict[str, Any] = {}
    for part in ("candidate", "prv_candidate", "cutout", "alert"):  # the documented load order
        parsed = fastavro.parse_schema(orjson.loads((LEGACY / "schema" / f"{part}.avsc")
                                                    .read_bytes()), named)
    body = io.BytesIO(data)
    expected = fastavro.schemaless_reader(body, parsed)
    assert body.tell() == len(data)

    with pytest.raises(BadInput) as caught:
        decode_payload(data, SchemaStore())
    assert data[:4].hex(" ") in str(caught.value)
    assert "ocf, confluent, single-object, schemaless" in str(caught.value)

    for source in (LEGACY / "schema", LEGACY / "schema" / "alert.avsc"):
        store = SchemaStore()
        store.default = load_schema_path(source)
        for framing in (None, "schemaless"):
            (datum, schema), = decode_payload(data, store, framing)
            assert same(datum, expected)
            assert schema is store.default
            assert write_body(datum, schema) == data


@pytest.mark.parametrize("relative", WIRE_FILES)
def test_rubin_confluent_messages_decode_with_the_schema_tree(relative: str) -> None:
    data = data_file(relative).read_bytes()
    major, minor = (int(x) for x in Path(relative).name[len("lsst.v"):-len(".avro")].split("_"))
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == major * 100 + minor
    store = rubin_store()
    (datum, schema), = decode_payload(data, store)
    assert schema.registry_id == major * 100 + minor
    assert schema.name == f"lsst.v{major}_{minor}.alert"
    body = io.BytesIO(data[5:])
    assert same(datum, fastavro.schemaless_reader(body, schema.parsed))
    assert body.tell() == len(data) - 5
    assert write_body(datum, schema) == data[5:]
    assert decode_payload(data, store, "confluent")[0][1] is schema  # cached by id


def test_rubin_11_1_with_a_schema_instead_of_a_resolver() -> None:
    data = data_file("lsst/pittgoogle-client/wire_format/lsst.v11_1.avro").read_bytes()
    store = SchemaStore()
    store.default = load_schema_path(RUBIN_11_1 / "lsst.v11_1.alert.avsc")
    expected = decode_payload(data, rubin_store())[0][0]
    for framing in ("confluent", None):  # detected: the bare reading fails, the framed one fits
        (datum, schema), = decode_payload(data, store, framing)
        assert schema is store.default
        assert same(datum, expected)


def test_rapid_message_with_an_unknown_schema_id_fails_cleanly() -> None:
    data = data_file("lsst/pittgoogle-client/wire_format/rapid.v01_00.avro").read_bytes()
    assert int.from_bytes(data[1:5], "big") == 100
    with pytest.raises(BadInput, match=r"^unknown schema id 100 ") as caught:
        decode_payload(data, rubin_store())
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("relative", [p for p in RUBIN_OCF if "/alert_packet/" in p])
def test_rubin_fake_alerts_match_the_schema_tree(relative: str) -> None:
    data = data_file(relative).read_bytes()
    major, minor = (int(x) for x in Path(relative).parts[-4:-2])
    (datum, header_schema), = decode_payload(data, SchemaStore())
    store = rubin_store()
    schema = store.by_id(major * 100 + minor)
    assert schema is not None and schema.fingerprint == header_schema.fingerprint
    # The same alert as Rubin sends it: Confluent-framed, its schema found by id.
    framed = b"\x00" + (major * 100 + minor).to_bytes(4, "big") + write_body(datum, schema)
    (again, again_schema), = decode_payload(framed, store)
    assert again_schema is schema
    assert same(again, datum)


# ---------------------------------------------------------------------------------------------
# JSON: every real alert to JSON and back, byte for byte
# ---------------------------------------------------------------------------------------------


def real_alerts() -> Iterator[tuple[str, bytes, Any, Schema]]:
    """(where, exact Avro body, datum, schema) of every decodable real alert."""
    store = rubin_store()
    legacy = SchemaStore()
    legacy.default = load_schema_path(LEGACY / "schema")
    payloads = [(p, (DATA / p).read_bytes(), store) for p in ZTF_OCF + RUBIN_OCF + WIRE_FILES]
    payloads += [(f"{t}:{name}", data, store) for t in TARBALLS for name, data in tar_members(t)]
    payloads += [(str(p.relative_to(DATA)), p.read_bytes(), legacy)
                 for p in sorted(LEGACY.glob("*.avro"))]
    for where, data, source in payloads:
        records = decode_payload(data, source)
        for n, (datum, schema) in enumerate(records):
            yield f"{where}#{n}", _bodies(data, len(records))[n], datum, schema


def _bodies(payload: bytes, count: int) -> list[bytes]:
    """The exact bytes of each record of a payload, as written by whoever made the file."""
    if payload[:4] != b"Obj\x01":
        return [payload[5:] if payload[:1] == b"\x00" else payload]
    schema, codec, sync, pos = parse_ocf_header(payload, SchemaStore())
    bodies = []
    for n, block in iter_ocf_blocks(payload, codec, sync, pos, Limits()):
        fo = io.BytesIO(block)
        for _ in range(n):
            start = fo.tell()
            fastavro.schemaless_reader(fo, schema.parsed)
            bodies.append(block[start:fo.tell()])
    assert len(bodies) == count
    return bodies


@pytest.fixture(scope="module")
def alerts() -> list[tuple[str, bytes, Any, Schema]]:
    return list(real_alerts())


def test_every_real_alert_re_encodes_to_its_original_bytes(alerts: list) -> None:
    assert len(alerts) > 150
    for where, original, datum, schema in alerts:
        assert write_body(datum, schema) == original, where


@pytest.mark.parametrize("bytes_mode", ["base64", "hex"])
def test_every_real_alert_through_kcp_json_and_back_is_byte_identical(
        alerts: list, bytes_mode: str) -> None:
    to_json, from_json = AvroToJson(bytes_mode), JsonToAvro(bytes_mode)
    for where, original, datum, schema in alerts:
        document = to_json(copy.deepcopy(datum), schema)
        orjson.loads(document)  # strict JSON
        assert write_body(from_json(document, schema), schema) == original, where




def test_every_real_alert_through_avro_json_and_back(alerts: list) -> None:
    to_json, from_json = AvroToJson(style="avro"), JsonToAvro(style="avro")
    for where, _, datum, schema in alerts:
        back = from_json(to_json(copy.deepcopy(datum), schema), schema)
        # This style drops a NaN's sign (documented): compare with the sign dropped.
        assert write_body(positive_nan(back), schema) == write_body(positive_nan(datum),
                                                                     schema), where


def test_real_negative_nans_keep_their_sign_in_kcp_json() -> None:
    data = data_file("lsst/alert-stream-simulator/sample_10_alert.avro").read_bytes()
    datum, schema = decode_payload(data, SchemaStore())[2]
    document = AvroToJson()(copy.deepcopy(datum), schema)
    assert b'"-NaN"' in document
    assert write_body(JsonToAvro()(document, schema), schema) == write_body(datum, schema)


# ---------------------------------------------------------------------------------------------
# Reader schemas: ZTF 3.0 .. 4.02 into one shape
# ---------------------------------------------------------------------------------------------

# What the v4.02 schema folder makes of each raw ZTF schema version, by the Avro resolution
# rules: None when it reads it (fields new since then from their defaults), else the first field
# it cannot fill.  drbversion (3.3) and prv_candidate.candid have no default in v4.02, and the
# 2021 v3.5 test alerts carry forced-photometry rows without candid as prv_candidates.
INTO_V4_02 = {"3.0": "candidate.drbversion", "3.1": "candidate.drbversion",
              "3.2": "candidate.drbversion", "3.3": None, "3.5": "prv_candidates[].candid",
              "4.02": None}


def raw_ztf_alerts() -> Iterator[tuple[str, bytes, str]]:
    """(where, payload, header version) of every raw-schema ZTF alert, files and tar members."""
    payloads = [(p, (DATA / p).read_bytes()) for p in ZTF_OCF]
    payloads += [(f"{t}:{n}", d) for t in TARBALLS for n, d in tar_members(t)]
    for where, data in payloads:
        schema = parse_ocf_header(data, SchemaStore())[0]
        if schema.name == "ztf.alert" and schema.definition.get("version") in INTO_V4_02:
            yield where, data, schema.definition["version"]


def test_real_ztf_alerts_3_0_to_4_02_into_the_v4_02_folder() -> None:
    store = SchemaStore()
    store.reader = load_schema_path(ZTF_SCHEMAS / "v4.02")
    # fastavro puts the fields it fills from defaults last: the same keys, not the same order.
    shape = {f["name"] for f in store.reader.definition["fields"]}
    candidate = {f["name"] for f in store.reader.parsed["fields"][4]["type"]["fields"]}
    outcomes: dict[str, int] = {}
    for where, data, version in raw_ztf_alerts():
        field = INTO_V4_02[version]
        if field is None:
            for datum, schema in decode_payload(data, store):
                assert schema is store.reader
                assert set(datum) == shape and set(datum["candidate"]) == candidate, where
                if version != "4.02":
                    assert datum["fp_hists"] is None  # the v4.01 field, from its default
                write_body(datum, store.reader)  # valid in the one shape it now has
        else:
            with pytest.raises(BadInput, match=re.escape(f": field {field} ")):
                decode_payload(data, store)
        outcomes[version] = outcomes.get(version, 0) + 1
    assert outcomes.get("3.3", 0) > 10 and outcomes.get("4.02", 0) >= 1
    assert outcomes.get("3.0", 0) and outcomes.get("3.2", 0)


def _covers(newer: Any, older: Any) -> bool:
    """``newer`` holds every value ``older`` has; where ``older`` has None, anything."""
    if older is None:
        return True
    if isinstance(older, dict):
        return all(_covers(newer[k], v) for k, v in older.items())
    if isinstance(older, list):
        return len(newer) == len(older) and all(map(_covers, newer, older))
    return same(newer, older)


def test_one_alert_in_four_schema_versions_reads_into_one_shape() -> None:
    store = SchemaStore()
    # The newest schema that reads all four: v3.3 added drbversion without a default.
    store.reader = load_schema_path(ZTF_SCHEMAS / "v3.2")
    datums = []
    for version in ("v3.0", "v3.1", "v3.2", "v3.3"):
        path = data_file(f"ztf/ztf-avro-alert/alerts/{version}/472263571115115000.avro")
        (datum, schema), = decode_payload(path.read_bytes(), store)
        assert schema is store.reader and datum["schemavsn"] == version[1:]
        datum["schemavsn"] = None
        datums.append(datum)

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        return [shape(v) for v in value] if isinstance(value, list) else None

    assert all(shape(d) == shape(datums[0]) for d in datums)
    assert {d["candid"] for d in datums} == {472263571115115000}
    # Each newer encoding carries every value of the older ones, and fills some of their gaps.
    for older, newer in itertools.pairwise(datums):
        assert _covers(newer, older)
    assert datums[0]["candidate"]["exptime"] is None and datums[3]["candidate"]["exptime"] == 30
