"""Tests for the synthetic ZTF-like alert generator (kcp.synth) and its schema."""

from __future__ import annotations

import array
import gzip
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate

from kcp import synth

REPO_ROOT = Path(__file__).resolve().parent.parent
CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
SAMPLE_SIZE = 40


@pytest.fixture(scope="module")
def schema_json() -> dict[str, Any]:
    return synth.load_ztf_like_schema()


@pytest.fixture(scope="module")
def parsed_schema(schema_json: dict[str, Any]) -> Any:
    return fastavro.parse_schema(schema_json)


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return list(synth.iter_alerts(SAMPLE_SIZE, seed=7))


def encode(parsed_schema: Any, alert: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema, alert)
    return buffer.getvalue()


def record_types(schema_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every record type defined anywhere in the schema, by full name."""
    found: dict[str, dict[str, Any]] = {}

    def visit(avro_type: Any, namespace: str) -> None:
        if isinstance(avro_type, list):
            for branch in avro_type:
                visit(branch, namespace)
        elif isinstance(avro_type, dict) and avro_type["type"] == "array":
            visit(avro_type["items"], namespace)
        elif isinstance(avro_type, dict) and avro_type["type"] == "record":
            namespace = avro_type.get("namespace", namespace)
            found[f"{namespace}.{avro_type['name']}"] = avro_type
            for field in avro_type["fields"]:
                visit(field["type"], namespace)

    visit(schema_json, "")
    return found


def fits_cards(fits: bytes) -> dict[str, str]:
    """Header keyword -> raw value text, up to END."""
    cards = {}
    for start in range(0, len(fits), 80):
        card = fits[start : start + 80].decode("ascii")
        if card.startswith("END "):
            return cards
        keyword, _, value = card.partition("=")
        cards[keyword.strip()] = value.split(" / ")[0].strip()
    raise AssertionError("FITS header has no END card")


def stamp_pixels(fits: bytes) -> array.array:
    pixels = array.array("f")
    pixels.frombytes(fits[2880 : 2880 + 4 * synth.STAMP_SIDE**2])
    if sys.byteorder == "little":
        pixels.byteswap()
    return pixels


# --- the schema -------------------------------------------------------------------------------


def test_schema_defines_the_ztf_like_record_types(schema_json: dict[str, Any]) -> None:
    types = record_types(schema_json)
    assert set(types) == {
        "ztf.alert",
        "ztf.alert.candidate",
        "ztf.alert.prv_candidate",
        "ztf.alert.fp_hist",
        "ztf.alert.cutout",
    }
    top_level = [field["name"] for field in schema_json["fields"]]
    assert top_level == [
        "schemavsn",
        "publisher",
        "objectId",
        "candid",
        "candidate",
        "prv_candidates",
        "fp_hists",
        *CUTOUT_FIELDS,
    ]
    assert 40 <= len(types["ztf.alert.candidate"]["fields"]) <= 70
    assert 25 <= len(types["ztf.alert.prv_candidate"]["fields"]) <= 40
    assert 12 <= len(types["ztf.alert.fp_hist"]["fields"]) <= 25


def test_every_field_is_documented_and_nullable_fields_default_to_null(
    schema_json: dict[str, Any],
) -> None:
    for record in record_types(schema_json).values():
        assert record.get("doc"), record["name"]
        for field in record["fields"]:
            assert field.get("doc"), f"{record['name']}.{field['name']} has no doc"
            if isinstance(field["type"], list):
                assert field["type"][0] == "null", field["name"]
                assert "default" in field and field["default"] is None, field["name"]


def test_upper_limit_fields_are_nullable_only_in_prv_candidate(
    schema_json: dict[str, Any],
) -> None:
    types = record_types(schema_json)
    candidate = {f["name"]: f["type"] for f in types["ztf.alert.candidate"]["fields"]}
    previous = {f["name"]: f["type"] for f in types["ztf.alert.prv_candidate"]["fields"]}
    for name in ("candid", "isdiffpos", "ra", "dec", "magpsf", "sigmapsf"):
        assert not isinstance(candidate[name], list)
        assert previous[name] == ["null", candidate[name]]


def test_schema_is_found_inside_an_installed_package_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema_json: dict[str, Any]
) -> None:
    installed_schema = tmp_path / "kcp" / "schemas" / "ztf" / "alert.avsc"
    installed_schema.parent.mkdir(parents=True)
    installed_schema.write_text(json.dumps({**schema_json, "doc": "installed copy"}))
    monkeypatch.setattr(synth, "__file__", str(tmp_path / "kcp" / "synth.py"))
    assert synth.load_ztf_like_schema()["doc"] == "installed copy"


def test_missing_schema_is_reported_with_the_places_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "__file__", str(tmp_path / "kcp" / "synth.py"))
    with pytest.raises(FileNotFoundError, match=r"alert\.avsc"):
        synth.load_ztf_like_schema()


# --- alert content ----------------------------------------------------------------------------


def test_alerts_validate_against_the_schema(
    alerts: list[dict[str, Any]], parsed_schema: Any
) -> None:
    for alert in alerts:
        assert validate(alert, parsed_schema, raise_errors=True)


def test_alerts_survive_an_avro_round_trip_unchanged(
    alerts: list[dict[str, Any]], parsed_schema: Any
) -> None:
    for alert in alerts:
        decoded = fastavro.schemaless_reader(
            io.BytesIO(encode(parsed_schema, alert)), parsed_schema
        )
        assert decoded == alert


def test_same_seed_gives_the_same_alerts_and_another_seed_does_not() -> None:
    first = list(synth.iter_alerts(3, seed=11))
    assert first == list(synth.iter_alerts(3, seed=11))
    assert first[0] == next(synth.iter_alerts(1, seed=11))
    assert first != list(synth.iter_alerts(3, seed=12))


def test_encoded_alert_sizes_are_like_real_ztf_alerts(
    alerts: list[dict[str, Any]], parsed_schema: Any
) -> None:
    sizes = [len(encode(parsed_schema, alert)) for alert in alerts]
    assert all(30_000 <= size <= 75_000 for size in sizes), sizes
    assert 40_000 <= statistics.median(sizes) <= 60_000
    for alert in alerts:
        for field in CUTOUT_FIELDS:
            assert 3_000 <= len(alert[field]["stampData"]) <= 17_000


def test_candidate_values_are_plausible(alerts: list[dict[str, Any]]) -> None:
    night_start_jd = 2458324.5  # 2018-07-25T00:00 UTC, the default night
    for alert in alerts:
        candidate = alert["candidate"]
        assert alert["schemavsn"] == synth.SCHEMA_VERSION
        assert alert["candid"] == candidate["candid"]
        assert len(str(candidate["candid"])) >= 18
        assert alert["objectId"].startswith("ZTF18")
        assert len(alert["objectId"]) == 12 and alert["objectId"][5:].isalpha()
        assert 0.0 <= candidate["ra"] < 360.0
        assert -30.0 <= candidate["dec"] <= 90.0
        assert 13.0 <= candidate["magpsf"] <= 21.0
        assert candidate["magpsf"] < candidate["diffmaglim"]
        assert 0.0 < candidate["sigmapsf"] < 0.3
        assert 0.0 <= candidate["rb"] <= 1.0 and 0.0 <= candidate["drb"] <= 1.0
        assert candidate["fid"] in (1, 2, 3)
        assert candidate["isdiffpos"] in ("t", "f")
        assert candidate["programid"] == 1
        assert 0.1 < candidate["jd"] - night_start_jd < 0.6
        assert candidate["jdstarthist"] <= candidate["jdendhist"] == candidate["jd"]
        assert candidate["ncovhist"] >= candidate["ndethist"] >= 1


def test_candids_are_unique_within_a_night_across_exposures() -> None:
    candids = [alert["candid"] for alert in synth.iter_alerts(450, seed=3)]
    assert len(set(candids)) == len(candids)


def test_night_sets_the_observation_dates() -> None:
    alert = next(synth.iter_alerts(1, night="20190101"))
    assert 0.1 < alert["candidate"]["jd"] - 2458484.5 < 0.6
    assert alert["objectId"].startswith("ZTF19")
    assert "_20190101" in alert["candidate"]["pdiffimfilename"]


def test_history_is_a_30_day_light_curve_with_upper_limits(alerts: list[dict[str, Any]]) -> None:
    upper_limits = detections = 0
    for alert in alerts:
        jd = alert["candidate"]["jd"]
        history = alert["prv_candidates"]
        assert 5 <= len(history) <= 60
        epochs = [previous["jd"] for previous in history]
        assert epochs == sorted(epochs)
        assert all(jd - 30.0 <= epoch < jd for epoch in epochs)
        for previous in history:
            if previous["candid"] is None:
                upper_limits += 1
                assert previous["magpsf"] is None and previous["ra"] is None
                assert previous["diffmaglim"] is not None
            else:
                detections += 1
                assert previous["magpsf"] < previous["diffmaglim"]
    assert upper_limits > 0 and detections > 0


def test_forced_photometry_is_sometimes_absent(alerts: list[dict[str, Any]]) -> None:
    lengths = [None if alert["fp_hists"] is None else len(alert["fp_hists"]) for alert in alerts]
    assert None in lengths
    assert all(length <= 30 for length in lengths if length is not None)
    assert any(length for length in lengths if length is not None)


# --- cutouts ----------------------------------------------------------------------------------


def test_cutouts_are_gzipped_63x63_float32_fits_images(alerts: list[dict[str, Any]]) -> None:
    for alert in alerts:
        for field in CUTOUT_FIELDS:
            cutout = alert[field]
            assert cutout["fileName"].startswith(f"candid{alert['candid']}")
            fits = gzip.decompress(cutout["stampData"])
            assert len(fits) % 2880 == 0
            assert fits.startswith(b"SIMPLE  =                    T")
            cards = fits_cards(fits)
            assert cards["BITPIX"] == "-32" and cards["NAXIS"] == "2"
            assert cards["NAXIS1"] == cards["NAXIS2"] == "63"
            assert float(cards["CRVAL1"]) == pytest.approx(alert["candidate"]["ra"], abs=1e-8)
            assert all(math.isfinite(value) for value in stamp_pixels(fits))


def test_cutouts_differ_and_show_the_source(alerts: list[dict[str, Any]]) -> None:
    all_stamps = [alert[field]["stampData"] for alert in alerts for field in CUTOUT_FIELDS]
    assert len(set(all_stamps)) == len(all_stamps)
    side = synth.STAMP_SIDE
    for alert in alerts:
        pixels = stamp_pixels(gzip.decompress(alert["cutoutDifference"]["stampData"]))
        middle = side // 2
        core = sum(
            pixels[row * side + column]
            for row in range(middle - 2, middle + 3)
            for column in range(middle - 2, middle + 3)
        )
        assert (core > 0) == (alert["candidate"]["isdiffpos"] == "t")


def test_cutouts_open_with_astropy(alerts: list[dict[str, Any]]) -> None:
    fits = pytest.importorskip("astropy.io.fits")
    alert = alerts[0]
    for field in CUTOUT_FIELDS:
        # astropy does not gunzip in-memory streams itself, real ZTF stamps included.
        stamp = gzip.GzipFile(fileobj=io.BytesIO(alert[field]["stampData"]))
        with fits.open(stamp) as hdus:
            image = hdus[0].data
            assert image.shape == (63, 63)
            assert image.dtype.kind == "f" and image.dtype.itemsize == 4
            assert hdus[0].header["CRVAL2"] == pytest.approx(alert["candidate"]["dec"])
            assert hdus[0].header["EXPTIME"] == 30.0


# --- files and the command line ---------------------------------------------------------------


def test_write_night_writes_a_readable_object_container_file(tmp_path: Path) -> None:
    path = tmp_path / "night.avro"
    assert synth.write_night(path, 4, seed=5) == 4
    with path.open("rb") as avro_file:
        reader = fastavro.reader(avro_file)
        assert reader.writer_schema["name"] == "ztf.alert"
        assert reader.codec == "null"
        assert list(reader) == list(synth.iter_alerts(4, seed=5))


def test_write_night_accepts_a_file_object() -> None:
    buffer = io.BytesIO()
    assert synth.write_night(buffer, 2, seed=1, night="20200101") == 2
    buffer.seek(0)
    records = list(fastavro.reader(buffer))
    assert [record["objectId"][:5] for record in records] == ["ZTF20", "ZTF20"]


def test_main_writes_the_file_and_reports_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.avro"
    assert synth.main(["3", str(path), "--seed", "9", "--night", "20181001"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "wrote 3 alerts" in captured.err
    with path.open("rb") as avro_file:
        assert list(fastavro.reader(avro_file)) == list(
            synth.iter_alerts(3, seed=9, night="20181001")
        )


@pytest.mark.parametrize("arguments", [["-1", "x.avro"], ["1", "x.avro", "--night", "2018-07-25"]])
def test_main_rejects_bad_arguments(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        synth.main(arguments)
    assert exit_info.value.code == 2


def test_module_runs_as_a_script_to_stdout() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kcp.synth", "2", "-", "--seed", "4"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    )
    assert list(fastavro.reader(io.BytesIO(completed.stdout))) == list(synth.iter_alerts(2, seed=4))
    assert b"wrote 2 alerts" in completed.stderr
