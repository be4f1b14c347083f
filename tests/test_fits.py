"""FITS: alerts -> FITS -> alerts is lossless, and the files are what astropy, ds9, TOPCAT expect.

"Lossless" means the datum read back has the original's Avro encoding, byte for byte. Real alerts
are read in place from ../shared/data (tests skip without them); synthetic ones come from
kcp.synth; edge cases (nulls beside NaN, empty strings, sentinel-valued integers, unions, logical
types) from a schema made here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kcptest import SHARED_DATA, shared

from kcp.codec import Schema, write_body
from kcp.errors import BadInput
from kcp.formats import fits as kfits
from kcp.message import Message
from kcp.options import Options
from kcp.synth import iter_alerts, load_ztf_like_schema

SIMULATOR = ("lsst", "alert-stream-simulator", "sample_10_alert.avro")
V402 = ("ztf", "pittgoogle-client",
        "ztf_20250302_programid1_ZTF17aaarzyp_2982177112815010003.v4_02.avro")


def to_fits(datum: Any, definition: Any) -> bytes:
    return kfits.FitsWriter(Options()).encode(Message(datum=datum, schema=Schema(definition),
                                                      decoded=True))


def from_fits(data: bytes, options: Options | None = None) -> Message:
    (message,) = kfits.FitsReader(options or Options()).decode(Message(value=data))
    return message


def assert_lossless(datum: Any, definition: Any) -> bytes:
    """Round-trip one datum through FITS; the FITS bytes, for more checks."""
    data = to_fits(datum, definition)
    back = from_fits(data)
    assert write_body(back.datum, back.schema) == write_body(datum, Schema(definition))
    return data


def readable_records(path: Path) -> Iterator[tuple[Any, Any]]:
    """(record, writer schema) for every record fastavro reads, up to a corrupt block."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        try:
            reader = fastavro.reader(stream)
            for record in reader:
                yield record, reader.writer_schema
        except Exception:  # the corrupt files PROVENANCE.md lists: keep what came before
            return


def real_alert_files() -> list[Path]:
    found = [p for p in sorted(shared("ztf").rglob("*.avro*")) + sorted(
        shared("lsst").rglob("*.avro*")) if "legacy_schemaless" not in str(p)
        and "wire_format" not in str(p)]
    return found


# -- lossless -----------------------------------------------------------------------------------
def test_every_real_alert_round_trips_byte_for_byte():
    counted: dict[str, int] = {}
    for path in real_alert_files():
        for record, definition in readable_records(path):
            assert_lossless(record, definition)
            kind = path.relative_to(SHARED_DATA).parts[0]
            counted[kind] = counted.get(kind, 0) + 1
    # ZTF 1.x to 4.02 (JPEG and null cutouts), Fink multi-record files, Rubin 3.0 to 11.0,
    # ELAsTiCC and the simulator's 16-HDU cutouts.
    assert counted["ztf"] >= 95 and counted["lsst"] >= 25, counted


def test_synthetic_alerts_round_trip():
    definition = load_ztf_like_schema()
    for alert in iter_alerts(15, seed=11):
        assert_lossless(alert, definition)


EDGE_SCHEMA = {
    "type": "record", "name": "edge", "namespace": "kcp.test", "fields": [
        {"name": "id", "type": "long"},
        {"name": "label", "type": ["null", "string"]},
        {"name": "blob", "type": ["null", "bytes"]},
        {"name": "score", "type": ["null", "double"]},
        {"name": "either", "type": ["null", "string", "long"]},
        {"name": "when", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9,
                                   "scale": 2}},
        {"name": "tags", "type": {"type": "map", "values": "int"}},
        {"name": "series", "type": ["null", {"type": "array", "items": ["null", "float"]}]},
        {"name": "source", "type": ["null", {"type": "record", "name": "source", "fields": [
            {"name": "flux", "type": ["null", "float"]},
            {"name": "flag", "type": ["null", "boolean"]},
            {"name": "band", "type": {"type": "enum", "name": "band", "symbols": ["g", "r"]}},
            {"name": "code", "type": {"type": "fixed", "name": "code", "size": 2}},
            {"name": "count", "type": ["null", "int"]},
            {"name": "nested", "type": ["null", {"type": "record", "name": "inner", "fields": [
                {"name": "x", "type": "double"}]}]},
        ]}]},
        {"name": "history", "type": ["null", {"type": "array", "items": ["kcp.test.source",
                                                                         "null"]}]},
        {"name": "cutoutScience", "type": ["null", "bytes"]},
    ]}
NEGATIVE_NAN = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]


def source(flux: Any = 1.5, flag: Any = True, count: Any = 3, **more: Any) -> dict:
    return {"flux": flux, "flag": flag, "band": "r", "code": b"ab", "count": count,
            "nested": None, **more}


def edge(**fields: Any) -> dict:
    datum = {"id": 1, "label": "x", "blob": b"\x00\x01", "score": 0.5, "either": None,
             "when": None, "day": 19000, "price": b"\x01\x00", "tags": {}, "series": None,
             "source": source(), "history": [], "cutoutScience": None}
    datum.update(fields)
    return fastavro.schemaless_reader(
        io.BytesIO(write_body(datum, Schema(EDGE_SCHEMA))), fastavro.parse_schema(EDGE_SCHEMA))


@pytest.mark.parametrize("fields", [
    {},
    # null beside the blank value of its column: NaN, "", b"", and integers at the TNULL sentinel
    {"history": [source(math.nan), source(None), source(flag=None), source(count=None),
                 source(count=-(1 << 31)), source(count=-(1 << 31) + 1)]},
    {"history": [None, source(), None], "score": math.nan, "label": "", "blob": b""},
    {"label": None, "blob": None, "score": None, "source": None, "history": None},
    {"id": -(1 << 63), "score": NEGATIVE_NAN, "series": [1.0, None, math.nan, -0.0]},
    # strings a FITS character column cannot hold exactly
    {"label": "trailing blank ", "history": [source(band="g")] * 2, "either": "ünïcode\x00"},
    {"either": 7, "when": 1_532_493_131_000_123, "tags": {"a": 1, "b": -2},
     "source": source(nested={"x": 2.5})},
    {"series": [], "history": [source(), source(flux=None, flag=False)]},
])
def test_edge_cases_round_trip(fields):
    assert_lossless(edge(**fields), EDGE_SCHEMA)


def test_alert_whose_fields_are_all_records_or_arrays():
    definition = {"type": "record", "name": "bare", "fields": [
        {"name": "source", "type": EDGE_SCHEMA["fields"][10]["type"][1]},
        {"name": "values", "type": {"type": "array", "items": "double"}}]}
    datum = {"source": source(), "values": [1.0, math.nan]}
    hdus = open_quietly(assert_lossless(datum, definition))
    assert hdus["ALERT"].header["TFIELDS"] == 0 and hdus["VALUES"].data["values"][0] == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.none() | st.floats(width=32, allow_nan=True),
    st.none() | st.booleans(),
    st.none() | st.integers(-(1 << 31), (1 << 31) - 1)), max_size=5),
    st.none() | st.text(max_size=20), st.none() | st.binary(max_size=20),
    st.none() | st.floats(allow_nan=True), st.integers(-(1 << 63), (1 << 63) - 1))
def test_random_values_round_trip(rows, label, blob, score, number):
    history = [source(flux, flag, count) for flux, flag, count in rows]
    assert_lossless(edge(id=number, label=label, blob=blob, score=score, history=history),
                    EDGE_SCHEMA)


def test_datum_read_back_is_the_one_the_avro_reader_gives():
    """Logical types come back as the objects fastavro gives (datetimes, dates, decimals)."""
    datum = edge(when=1_532_493_131_000_123)
    back = from_fits(to_fits(datum, EDGE_SCHEMA)).datum
    assert back == datum or orjson.dumps(back, default=str) == orjson.dumps(datum, default=str)
    assert back["when"].year == 2018 and back["day"].year == 2022


def test_reader_schema_resolves_records_read_from_fits():
    reader = Schema({"type": "record", "name": "edge", "namespace": "kcp.test",
                     "fields": [{"name": "id", "type": "long"}]})
    options = Options()
    options.schemas.reader = reader
    back = from_fits(to_fits(edge(id=42), EDGE_SCHEMA), options)
    assert back.datum == {"id": 42} and back.schema is reader


# -- what people see ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ztf_alert() -> tuple[Any, Any]:
    return next(readable_records(shared(*V402)))


def open_quietly(data: bytes) -> fits.HDUList:
    """The file as astropy reads it; any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hdus = fits.open(io.BytesIO(data))
        hdus.verify("exception")
        for hdu in hdus:
            _ = hdu.data
    return hdus


def test_ztf_alert_layout_for_astropy_ds9_and_topcat(ztf_alert):
    record, definition = ztf_alert
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ZTF stamps' non-standard SIMPLE card must not leak
        data = assert_lossless(record, definition)
    hdus = open_quietly(data)
    assert [h.name for h in hdus] == [
        "PRIMARY", "SCIENCE", "TEMPLATE", "DIFFERENCE", "ALERT", "CANDIDATE", "PRV_CANDIDATES",
        "FP_HISTS", "CUTOUTSCIENCE", "CUTOUTTEMPLATE", "CUTOUTDIFFERENCE", "AVRO_SCHEMA"]
    primary = hdus[0].header
    assert primary["OBJECTID"] == record["objectId"] and primary["CANDID"] == record["candid"]
    assert primary["AVRONAME"] == "ztf.alert" and primary["SCHEMAVSN"] == "4.02"
    # The image is the stamp, decompressed, with the stamp's own header cards.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stamp's own SIMPLE card
        stamp = fits.open(io.BytesIO(gzip.decompress(record["cutoutScience"]["stampData"])))
        assert hdus["SCIENCE"].data.tobytes() == stamp[0].data.tobytes()
        assert hdus["SCIENCE"].header["BUNIT"] == stamp[0].header["BUNIT"]
    assert hdus["SCIENCE"].header["CUTOUT"] == "cutoutScience"
    # The stamp as sent is kept byte for byte.
    assert hdus["CUTOUTSCIENCE"].data["stampData"][0].tobytes() == \
        record["cutoutScience"]["stampData"]
    candidate = Table.read(hdus["CANDIDATE"])
    assert candidate["candid"][0] == record["candidate"]["candid"]
    assert candidate["ra"][0] == record["candidate"]["ra"]
    history = Table.read(hdus["PRV_CANDIDATES"])
    assert len(history) == len(record["prv_candidates"])
    # Nulls show as nulls: masked integers (TNULL), NaN floats.
    assert history["candid"].mask.tolist() == [p["candid"] is None
                                               for p in record["prv_candidates"]]
    magnitudes = np.ma.filled(history["magpsf"], np.nan)
    assert np.isnan(magnitudes).tolist() == [p["magpsf"] is None for p in record["prv_candidates"]]


def test_an_alert_edited_and_saved_by_astropy_reads_back_the_same(ztf_alert):
    for datum, definition in (ztf_alert, (EDGE_DATUM, EDGE_SCHEMA)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stamps' SIMPLE cards, copied
            hdus = fits.open(io.BytesIO(to_fits(datum, definition)))
            hdus[0].header["OBSERVER"] = "me"
            edited = io.BytesIO()
            hdus.writeto(edited)
        back = from_fits(edited.getvalue())
        assert write_body(back.datum, back.schema) == write_body(datum, Schema(definition))


def test_rubin_multi_hdu_cutouts_are_kept_whole():
    record, definition = next(readable_records(
        shared("lsst", "alert_packet", "schema", "10", "0", "sample_data", "fakeAlert.avro")))
    stamp = shared("cutouts", "rubin_v10_0_170094456272322680_diff.fits").read_bytes()
    record = {**record, "cutoutDifference": stamp}
    hdus = open_quietly(assert_lossless(record, definition))
    names = [h.name for h in hdus]
    assert names[1:4] == ["DIFFERENCE", "DIFFERENCE_UNCERT", "DIFFERENCE_PSFIMAGE"]
    assert [h.header["CUTHDU"] for h in hdus[1:4]] == [0, 1, 2]
    assert {h.header["CUTOUT"] for h in hdus[1:4]} == {"cutoutDifference"}
    assert hdus["DIFFERENCE"].header["BUNIT"] == "nJy" and "CRVAL1" in hdus["DIFFERENCE"].header


def test_simulator_16_hdu_exposure_is_shown_and_kept():
    record, definition = next(readable_records(shared(*SIMULATOR)))
    hdus = open_quietly(assert_lossless(record, definition))
    views = [h for h in hdus if h.header.get("CUTOUT") == "cutoutDifference"]
    assert len(views) == 16 and views[0].name == "DIFFERENCE"
    assert views[1].data.shape == (30, 30)


def test_jpeg_and_null_cutouts_have_no_image_but_survive():
    path = shared("ztf", "ztf-avro-alert", "alerts", "v1.1", "1726958725155000.avro")
    record, definition = next(readable_records(path))
    hdus = open_quietly(assert_lossless(record, definition))
    assert not any(h.is_image and h.name != "PRIMARY" for h in hdus)
    assert "cutoutScience: a JPEG image, not FITS" in str(hdus[0].header["COMMENT"])
    nulls = {**record, "cutoutScience": None, "cutoutTemplate": None}
    hdus = open_quietly(assert_lossless(nulls, definition))
    assert hdus["CUTOUTSCIENCE"].header["AVRONULL"] is True and len(hdus["CUTOUTSCIENCE"].data) == 0


def test_gzip_bomb_in_a_cutout_is_bad_input(ztf_alert):
    record, definition = ztf_alert
    bomb = gzip.compress(bytes(kfits.STAMP_LIMIT + 1), compresslevel=1)
    record = {**record, "cutoutScience": {"fileName": "bomb.fits.gz", "stampData": bomb}}
    with pytest.raises(BadInput, match="cutoutScience decompresses past 64 MB"):
        to_fits(record, definition)


def test_damaged_stamps_lose_their_image_not_the_alert(ztf_alert):
    record, definition = ztf_alert
    stamp = record["cutoutScience"]["stampData"]
    for damaged in (stamp[: len(stamp) // 2], b"\x1f\x8bnot gzip", b"SIMPLE  = junk" * 10,
                    gzip.compress(b"SIMPLE  =                    T" + b" " * 50 + b"NAXIS1 = 99")):
        broken = {**record, "cutoutScience": {"fileName": "x", "stampData": damaged}}
        hdus = open_quietly(assert_lossless(broken, definition))
        assert "SCIENCE" not in [h.name for h in hdus]
        assert "cutoutScience: " in str(hdus[0].header["COMMENT"])


@pytest.mark.parametrize("data, message", [
    (b"", "not a FITS file"),
    (b"PK\x03\x04 a zip", "not a FITS file"),
    (b"SIMPLE  =" + b" " * 71, "truncated FITS header"),
])
def test_unreadable_fits_is_bad_input(data, message):
    with pytest.raises(BadInput, match=message):
        from_fits(data)


def test_fits_without_kcp_tables_and_truncated_alerts_are_bad_input(ztf_alert):
    plain = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(plain)
    with pytest.raises(BadInput, match="without kcp's ALERT and AVRO_SCHEMA"):
        from_fits(plain.getvalue())
    data = to_fits(*ztf_alert)
    for cut in (len(data) - 2880, len(data) // 2, 5000):
        with pytest.raises(BadInput):
            from_fits(data[:cut])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_bytes_give_the_alert_or_bad_input_never_a_crash(damage):
    data = bytearray(EDGE_FITS)
    for position, value in damage:
        data[position % len(data)] = value
    with contextlib.suppress(BadInput):
        from_fits(bytes(data))


EDGE_DATUM = edge(history=[source(), None, source(math.nan)], series=[1.0, None], either=3,
                  label=None, score=NEGATIVE_NAN, source=source(flag=None, nested={"x": 1.0}))
EDGE_FITS = to_fits(EDGE_DATUM, EDGE_SCHEMA)


# -- the command line ---------------------------------------------------------------------------
def test_cp_avro_to_fits_and_back(kcp):
    source = shared(*V402)
    made = kcp("cp", str(source), "alert.fits")
    assert made.exit_code == 0 and made.stderr == "", made.stderr
    back = kcp("cp", "alert.fits", "back.avro")
    assert back.exit_code == 0, back.stderr
    (original,), (copy,) = (list(readable_records(p)) for p in (source, Path("back.avro")))
    assert write_body(copy[0], Schema(copy[1])) == write_body(original[0], Schema(original[1]))
    as_json = kcp("convert", "--from", "fits", stdin=Path("alert.fits").read_bytes())
    assert as_json.exit_code == 0
    assert orjson.loads(as_json.stdout_bytes)["objectId"] == "ZTF17aaarzyp"


def test_a_fits_file_holds_one_alert(kcp):
    result = kcp("cp", str(shared(*SIMULATOR)), "alerts.fits")
    assert result.exit_code == 2
    assert "a .fits file holds one alert" in result.stderr
    assert kcp("cp", str(shared(*SIMULATOR)), "first.fits", "-c", "1").exit_code == 0


def test_json_records_need_a_schema_for_fits(kcp):
    result = kcp("convert", "--to", "fits", stdin=b'{"a": 1}\n')
    assert result.exit_code == 2 and "give --schema FILE" in result.stderr
