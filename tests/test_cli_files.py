"""The CLI in-process (click's CliRunner) on files and pipes: exit statuses, stdout, stderr."""

from __future__ import annotations

import io
from pathlib import Path

import fastavro
import orjson
import pytest
from kcptest import avro_bytes, fastavro_records, shared

from kcp.synth import write_night


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("night") / "night.avro"
    write_night(path, 12, seed=3)
    return path


def test_help_lists_commands_addresses_and_exit_statuses(kcp):
    result = kcp("--help")
    assert result.exit_code == 0
    for word in ("produce", "consume", "tail", "cp", "convert", "schema", "kafka://", "130"):
        assert word in result.stdout
    for command in ("produce", "consume", "tail", "cp", "convert", "schema"):
        assert "Examples:" in kcp(command, "--help").stdout


def test_convert_avro_to_json_and_back_is_lossless(kcp, night, tmp_path):
    as_json = kcp("convert", stdin=night.read_bytes())
    assert as_json.exit_code == 0 and as_json.stderr == ""
    lines = as_json.stdout_bytes.splitlines()
    assert len(lines) == 12
    assert orjson.loads(lines[0])["cutoutScience"]["stampData"][:4] == "H4sI"  # base64 gzip

    schema = tmp_path / "alert.avsc"
    with open(night, "rb") as stream:
        definition = fastavro.reader(stream).writer_schema
    schema.write_text(orjson.dumps(definition).decode())
    back = kcp("convert", "--to", "avro", "--schema", str(schema), stdin=as_json.stdout_bytes)
    assert back.exit_code == 0, back.stderr
    records = list(fastavro.reader(io.BytesIO(back.stdout_bytes)))
    assert avro_bytes(records, definition) == avro_bytes(fastavro_records(night), definition)


def test_cp_file_to_file_through_every_text_format(kcp, night, tmp_path):
    assert kcp("cp", str(night), "night.jsonl").exit_code == 0
    assert len(Path("night.jsonl").read_bytes().splitlines()) == 12
    assert not Path("night.jsonl.part").exists()
    result = kcp("cp", str(night), "copy.avro")
    assert result.exit_code == 0
    assert fastavro_records(Path("copy.avro")) == fastavro_records(night)


def test_json_to_avro_without_a_schema_is_bad_input(kcp):
    # Bad input, not a usage error: one JSON message in an Avro topic must not stop a group
    # for good (--on-error skip gets past it).
    result = kcp("convert", "--to", "avro", stdin=b'{"a": 1}\n')
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "kcp: <stdin>:line 1: writing Avro needs a schema for records read as plain JSON: "
        "give --schema FILE")


def test_json_that_does_not_match_the_schema_names_field_and_line(kcp, tmp_path):
    schema = tmp_path / "p.avsc"
    schema.write_text('{"type":"record","name":"p","fields":[{"name":"ra","type":"double"}]}')
    result = kcp("convert", "--to", "avro", "--schema", str(schema),
                 stdin=b'{"ra": 1.0}\n{"ra": "north"}\n')
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "kcp: <stdin>:line 2: field ra: expected a number, got 'north'")


def truncated_night(night: Path, tmp_path: Path) -> Path:
    """The night with its last record cut in half, as a crashed writer would leave it."""
    data = night.read_bytes()
    path = tmp_path / "torn.avro"
    path.write_bytes(data[: len(data) - 30_000])
    return path


def test_bad_input_keeps_everything_before_it(kcp, night, tmp_path):
    torn = truncated_night(night, tmp_path)
    result = kcp("cp", str(torn), "out.jsonl")
    assert result.exit_code == 3
    message = result.stderr.strip()
    assert message.startswith(f"kcp: {torn}:record ") and "\n" not in message
    kept = Path("out.jsonl").read_bytes().splitlines()
    assert 0 < len(kept) < 12
    assert [orjson.loads(x)["candid"] for x in kept] == [
        r["candid"] for r in fastavro_records(night)[: len(kept)]]


def test_skip_and_dead_letter_policies(kcp, night, tmp_path):
    good = kcp("cp", str(night), "-", "--to", "raw", "--force")
    assert good.exit_code == 0
    skip = kcp("cp", str(night), "out.jsonl", "--on-error", "skip")
    assert skip.exit_code == 0
    schema = tmp_path / "p.avsc"
    schema.write_text('{"type":"record","name":"p","fields":[{"name":"ra","type":"double"}]}')
    lines = b'{"ra": 1.0}\n{"ra": "north"}\n{"ra": 2.0}\n'
    skipped = kcp("convert", "--to", "json", "--schema", str(schema), "--on-error", "skip",
                  stdin=lines)
    assert skipped.exit_code == 0
    assert skipped.stdout_bytes == b'{"ra":1.0}\n{"ra":2.0}\n'
    dead = kcp("convert", "--schema", str(schema), "--on-error", "dead-letter:bad.jsonl",
               stdin=lines)
    assert dead.exit_code == 0
    (letter,) = [orjson.loads(x) for x in Path("bad.jsonl").read_bytes().splitlines()]
    assert letter["where"] == "<stdin>:line 2"
    assert "expected a number" in letter["error"]


def test_schema_command_on_files(kcp, night):
    first = kcp("schema", str(night))
    assert first.exit_code == 0
    assert orjson.loads(first.stdout_bytes)["name"] in ("alert", "ztf.alert")
    every = kcp("schema", "--all", str(night))
    (line,) = every.stdout_bytes.splitlines()
    assert orjson.loads(line)["count"] == 12


def test_schema_census_of_real_ztf_versions(kcp):
    folder = shared("ztf", "ztf-avro-alert", "alerts")
    result = kcp("schema", "--all", f"{folder}/*/*.avro")
    assert result.exit_code == 0, result.stderr
    census = [orjson.loads(x) for x in result.stdout_bytes.splitlines()]
    assert sum(c["count"] for c in census) == 28
    assert len({c["fingerprint"] for c in census}) >= 10


def test_usage_mistakes_exit_2(kcp, night):
    assert kcp("consume").exit_code == 2
    assert kcp("consume", "t", "--offest", "1").exit_code == 2
    wrong = kcp("produce", "night.avro")
    assert wrong.exit_code == 2 and "not a topic" in wrong.stderr
    missing = kcp("cp", "nothing-here.avro", "out.jsonl")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    unknown = kcp("cp", str(night), "./out.unknown")
    assert unknown.exit_code == 2 and "give --to FORMAT" in unknown.stderr
