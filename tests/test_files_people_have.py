"""Files written by other tools and older kcp versions, through the installed kcp in real pipes:
the 2018 prototype's JSON, OCF codecs, --save-schema, schema evolution with --fill-missing."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import fastavro
import orjson
import pytest
from kcptest import KCP, avro_bytes, fastavro_records, shared

from kcp.codec import CODECS
from kcp.synth import load_ztf_like_schema, write_night

PROTOTYPE_BYTES = "data:application/octet-stream;base64,"


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """A shell pipeline of the installed kcp (``$KCP``), failing when any part fails."""
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd,
                          env={"KCP": KCP, "PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME":
                               str(cwd / "config")}, capture_output=True, timeout=120)


def header_schema(path: Path) -> object:
    """The writer schema an OCF file's header holds, as written."""
    with open(path, "rb") as stream:
        return orjson.loads(fastavro.reader(stream).metadata["avro.schema"])


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("night")
    write_night(folder / "night.avro", 5, seed=18)
    (folder / "alert.avsc").write_bytes(orjson.dumps(load_ztf_like_schema()))
    return folder


def test_prototype_json_data_uris_are_written_and_read_back_to_bytes(night):
    written = sh("$KCP convert --bytes data-uri < night.avro | tee proto.jsonl | "
                 "$KCP convert --schema alert.avsc --to avro | cat > back.avro", night)
    assert written.returncode == 0, written.stderr
    first = orjson.loads((night / "proto.jsonl").read_bytes().splitlines()[0])
    assert first["cutoutScience"]["stampData"].startswith(PROTOTYPE_BYTES)
    definition = load_ztf_like_schema()
    assert avro_bytes(fastavro_records(night / "back.avro"), definition) == \
        avro_bytes(fastavro_records(night / "night.avro"), definition)


@pytest.mark.parametrize("layout", ["one-document", "array", "documents", "lines"])
def test_a_json_file_is_read_whatever_its_layout(night, layout):
    documents = [orjson.loads(line) for line in sh(
        "$KCP convert --bytes data-uri < night.avro", night).stdout.splitlines()]
    pretty = [orjson.dumps(d, option=orjson.OPT_INDENT_2) for d in documents]
    content = {
        "one-document": pretty[0] + b"\n",
        "array": b"[\n" + b",\n".join(pretty) + b"\n]\n",
        "documents": b"\n".join(pretty),
        "lines": b"\n" + b"\n".join(orjson.dumps(d) for d in documents) + b"\n",
    }[layout]
    (night / f"{layout}.json").write_bytes(content)
    result = sh(f"$KCP cp {layout}.json - --schema alert.avsc --to avro | "
                f"$KCP convert --bytes data-uri | head -5", night)
    assert result.returncode == 0, result.stderr
    expected = documents[:1] if layout == "one-document" else documents
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == expected


def test_a_json_document_cut_short_is_one_line_naming_where(night):
    result = sh('printf \'{\\n "a": [1, 2\\n\' > cut.json; $KCP cp cut.json -', night)
    assert result.returncode == 3
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert "cut.json:line 1" in result.stderr.decode()


def test_bad_data_uri_is_bad_input(night):
    record = {"a": "data:application/octet-stream;base64,!!!"}
    (night / "bytes.avsc").write_text('{"type": "record", "name": "r", "fields": '
                                      '[{"name": "a", "type": "bytes"}]}')
    (night / "bad.json").write_bytes(orjson.dumps(record))
    result = sh("$KCP cp bad.json - --schema bytes.avsc --to avro | cat", night)
    assert result.returncode == 3
    assert "field a" in result.stderr.decode()


@pytest.mark.parametrize("codec", CODECS)
def test_every_ocf_codec_round_trips_through_files_and_tar_members(night, codec):
    result = sh(f"$KCP cp night.avro {codec}.avro --codec {codec} && "
                f"$KCP cp {codec}.avro {codec}.tar --codec {codec} && "
                f"$KCP cp {codec}.tar - --to avro | cat > {codec}.back.avro", night)
    assert result.returncode == 0, result.stderr
    definition = load_ztf_like_schema()
    original = avro_bytes(fastavro_records(night / "night.avro"), definition)
    with open(night / f"{codec}.avro", "rb") as stream:  # its records: read back below
        assert fastavro.reader(stream).metadata["avro.codec"] == codec
    with tarfile.open(night / f"{codec}.tar") as archive:
        members = [archive.extractfile(m).read() for m in archive.getmembers()]
    assert len(members) == 5
    for member in members:
        reader = fastavro.reader(io.BytesIO(member))
        assert reader.metadata["avro.codec"] == codec
    assert avro_bytes(fastavro_records(night / f"{codec}.back.avro"), definition) == original


def test_save_schema_writes_each_distinct_writer_schema_once(night):
    definition = load_ztf_like_schema()
    changed = {**definition, "doc": "a later version of the same alert"}
    folder = night / "mixed"
    folder.mkdir()
    (folder / "a.avro").write_bytes((night / "night.avro").read_bytes())
    with open(folder / "b.avro", "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(changed),
                        fastavro_records(night / "night.avro")[:2])
    result = sh("$KCP cp 'mixed/*.avro' - --save-schema saved.avsc | wc -l", night)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"7"
    assert orjson.loads((night / "saved.avsc").read_bytes()) == header_schema(folder / "a.avro")
    assert orjson.loads((night / "saved.2.avsc").read_bytes()) == header_schema(folder / "b.avro")
    assert not (night / "saved.3.avsc").exists()
    notice, = result.stderr.decode().splitlines()
    assert "schema 2" in notice and "mixed/b.avro:record 1" in notice and "saved.2.avsc" in notice


def test_save_schema_of_a_real_archive_with_two_schema_versions(tmp_path):
    archive = shared("ztf_tar", "ZTF18abxhyqv.tar.gz")  # alerts of schema 3.1 and 3.2
    result = sh(f"$KCP cp {archive} - --save-schema s.avsc | wc -l", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"4"
    versions = {orjson.loads((tmp_path / name).read_bytes())["version"]
                for name in ("s.avsc", "s.2.avsc")}
    assert versions == {"3.1", "3.2"}


OLD = {"type": "record", "name": "alert", "namespace": "test", "fields": [
    {"name": "id", "type": "long"}]}
NEW = {"type": "record", "name": "alert", "namespace": "test", "version": "2", "fields": [
    {"name": "id", "type": "long"},
    {"name": "label", "type": "string"},
    {"name": "flux", "type": {"type": "record", "name": "flux", "fields": [
        {"name": "value", "type": "double"}, {"name": "band", "type": {
            "type": "enum", "name": "band", "symbols": ["g", "r"]}}]}},
    {"name": "rb", "type": ["null", "float"]},
    {"name": "history", "type": {"type": "array", "items": "flux"}},
    {"name": "kept", "type": "int", "default": 7}]}


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evolved")
    with open(folder / "old.avro", "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(OLD), [{"id": n} for n in range(3)])
    (folder / "new.avsc").write_bytes(orjson.dumps(NEW))
    return folder


@pytest.mark.parametrize("source", ["old.avro", "old.tar"])
def test_a_field_added_without_default_is_refused_in_one_short_line(evolved, source):
    # A tar's members are decoded as payloads (kcp.codec.framing), a file by fastavro.reader.
    result = sh(f"$KCP cp old.avro old.tar && $KCP cp {source} - --reader-schema new.avsc",
                evolved)
    assert result.returncode == 3
    error = result.stderr.decode()
    assert error.count("\n") == 1 and len(error) < 300
    assert "schema test.alert cannot be read as schema test.alert 2: field label (and 3 more) " \
           "is not in the writer's schema and has no default" in error


@pytest.mark.parametrize("source", ["old.avro", "old.tar"])
def test_fill_missing_gives_each_missing_field_its_zero_and_says_how_many(evolved, source):
    result = sh(f"$KCP cp old.avro old.tar && "
                f"$KCP cp {source} - --reader-schema new.avsc --fill-missing | cat", evolved)
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    zero = {"label": "", "flux": {"value": 0.0, "band": "g"}, "rb": None, "history": [],
            "kept": 7}
    assert records == [{"id": n, **zero} for n in range(3)]
    assert result.stderr.decode() == (
        "kcp: --fill-missing gave 3 records the zero of fields their schema lacks: label (3), "
        "flux (3), rb (3), history (3)\n")


def test_fill_missing_reads_real_ztf_3_0_alerts_as_4_02(tmp_path):
    alerts = shared("ztf", "ztf-avro-alert", "alerts", "v3.0")
    schema = shared("ztf", "ztf-avro-alert", "schema", "v4.02", "alert.avsc")
    refused = sh(f"$KCP cp '{alerts}/*.avro' - --reader-schema {schema}", tmp_path)
    assert refused.returncode == 3
    assert len(refused.stderr) < 400 and b"field candidate.drbversion is not in" in refused.stderr
    filled = sh(f"$KCP cp '{alerts}/*.avro' - --reader-schema {schema} --fill-missing | cat",
                tmp_path)
    assert filled.returncode == 0, filled.stderr
    records = [orjson.loads(line) for line in filled.stdout.splitlines()]
    originals = [record for path in sorted(alerts.glob("*.avro"))
                 for record in fastavro_records(path)]
    assert len(records) == len(originals) == 4
    for record, original in zip(records, originals, strict=True):
        assert record["candidate"]["drbversion"] == ""
        assert record["candid"] == original["candid"]
        assert record["candidate"]["magpsf"] == pytest.approx(original["candidate"]["magpsf"])
    assert filled.stderr.decode() == ("kcp: --fill-missing gave 4 records the zero of fields "
                                      "their schema lacks: candidate.drbversion (4)\n")


def test_zero_of_a_union_is_its_first_branch_and_named_types_resolve():
    from kcp.codec.schemas import FilledSchema, Schema

    filled = FilledSchema(Schema({"type": "record", "name": "r", "namespace": "n", "fields": [
        {"name": "a", "type": ["int", "null"]},
        {"name": "b", "type": {"type": "fixed", "name": "f", "size": 2}},
        {"name": "c", "type": "f"},
        {"name": "d", "type": {"type": "map", "values": "string"}},
        {"name": "e", "type": "bytes"}]}))
    defaults = {f["name"]: f["default"] for f in filled.definition["fields"]}
    assert defaults == {"a": 0, "b": "\0\0", "c": "\0\0", "d": {}, "e": ""}


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_json_values_are_found_by_their_brackets_across_any_chunking(chunk):
    from kcp.formats.json import json_values

    def values(data: bytes) -> list:
        return list(json_values((data[i:i + chunk] for i in range(0, len(data), chunk)), 1 << 20))

    assert values(b'{"a": [1, {"b": "x}\\"]"}]}\n{"c":1}') == [
        (1, b'{"a": [1, {"b": "x}\\"]"}]}'), (2, b'{"c":1}')]
    assert values(b'[\n {"a":1},\n {"a":"]"}\n]\n') == [(2, b'{"a":1}'), (3, b'{"a":"]"}')]
    assert values(b'{\n "a": 1\n}\n\n{\n "b": 2\n}') == [
        (1, b'{\n "a": 1\n}'), (5, b'{\n "b": 2\n}')]
    assert values(b'{"a": "cut') == [(1, b'{"a": "cut')]  # for the parser to report
