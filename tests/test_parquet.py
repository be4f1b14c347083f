"""Parquet: lossless both ways between Avro and Parquet, in files, pipes and Kafka topics."""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import uuid
from pathlib import Path

import fastavro
import pytest
from kcptest import KCP, avro_bytes, fastavro_records, kcp_env, real_ztf_files, run_kcp

import kcp
from kcp.formats import parquet
from kcp.synth import write_night

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("night") / "night.avro"
    write_night(path, 30, seed=5)
    return path


def copy(source: Path | str, destination: Path | str, **options: object) -> kcp.Summary:
    """A copy through the library, as ``kcp cp`` runs it."""
    return kcp.plan([str(source)], str(destination), kcp.Options(quiet=True, **options)).execute()


def same_records(a: Path, b: Path) -> bool:
    with open(a, "rb") as stream:
        schema = fastavro.reader(stream).writer_schema
    return avro_bytes(fastavro_records(a), schema) == avro_bytes(fastavro_records(b), schema)


def test_alerts_become_structs_lists_of_structs_and_binary_cutouts(night, tmp_path):
    copy(night, tmp_path / "night.parquet")
    arrow = pq.read_schema(tmp_path / "night.parquet")
    assert str(arrow.field("candidate").type).startswith("struct<jd: double not null")
    assert str(arrow.field("prv_candidates").type).startswith("list<element: struct<")
    assert str(arrow.field("cutoutScience").type) == \
        "struct<fileName: string not null, stampData: binary not null>"
    assert arrow.metadata[b"avro.schema"].startswith(b'{"type":"record"')
    copy(tmp_path / "night.parquet", tmp_path / "back.avro")
    assert same_records(night, tmp_path / "back.avro")


def test_parquet_through_pipes_of_the_installed_kcp(night, tmp_path):
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         f"{KCP} cp {night} - --to parquet | cat > piped.parquet && "
         f"cat piped.parquet | {KCP} convert --to avro | cat > back.avro"],
        cwd=tmp_path, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert same_records(night, tmp_path / "back.avro")


def test_row_groups_are_written_as_the_copy_goes(night, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "BATCH_ROWS", 4)
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1)  # a row group per batch
    copy(night, tmp_path / "groups.parquet")
    assert pq.ParquetFile(tmp_path / "groups.parquet").metadata.num_row_groups == 8
    monkeypatch.setattr(parquet, "BATCH_ROWS", 7)
    copy(tmp_path / "groups.parquet", tmp_path / "back.avro")
    assert same_records(night, tmp_path / "back.avro")


EVERY_TYPE = {"type": "record", "name": "every", "namespace": "test", "fields": [
    {"name": "union", "type": ["null", "string", "long", {"type": "array", "items": "int"}]},
    {"name": "map", "type": {"type": "map", "values": ["null", "double"]}},
    {"name": "enum", "type": {"type": "enum", "name": "band", "symbols": ["g", "r", "i"]}},
    {"name": "fixed", "type": {"type": "fixed", "name": "four", "size": 4}},
    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9,
                                "scale": 3}},
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "nan", "type": "float"},
    {"name": "nested", "type": {"type": "array", "items": {"type": "map", "values": "band"}}},
]}


def test_every_avro_type_round_trips(tmp_path):
    records = [{
        "union": value, "map": {"a": 1.5, "b": None}, "enum": "r", "fixed": b"\x00\x01\x02\x03",
        "when": dt.datetime(2026, 3, 6, 1, 2, 3, 456789, tzinfo=dt.UTC),
        "day": dt.date(2026, 3, 6), "amount": decimal.Decimal("-12.345"),
        "id": str(uuid.UUID(int=n)), "nan": float("nan"), "nested": [{"x": "i"}, {}],
    } for n, value in enumerate([None, "text", 42, [1, 2, 3]])]
    with open(tmp_path / "every.avro", "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(EVERY_TYPE), records)
    copy(tmp_path / "every.avro", tmp_path / "every.parquet")
    copy(tmp_path / "every.parquet", tmp_path / "back.avro")
    assert same_records(tmp_path / "every.avro", tmp_path / "back.avro")


def test_a_truncated_parquet_file_is_one_line_and_exit_3(night, tmp_path):
    copy(night, tmp_path / "night.parquet")
    data = (tmp_path / "night.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[:len(data) // 2])
    result = run_kcp(["cp", str(tmp_path / "cut.parquet"), "-"], kcp_env(None, tmp_path))
    assert result.returncode == 3
    assert result.stdout == b""
    assert result.stderr.count(b"\n") == 1 and b"cut.parquet: not a readable Parquet" \
        in result.stderr


def test_real_ztf_alerts_of_every_version_round_trip_exactly(tmp_path):
    good, _ = real_ztf_files()
    by_version: dict[object, Path] = {}  # one file of each schema version, multi-record ones too
    for path in good:
        with open(path, "rb") as stream:
            schema = fastavro.reader(stream).writer_schema
        by_version.setdefault((schema.get("version"), schema["name"]), path)
    versions = {version for version, _ in by_version}
    for number, path in enumerate(by_version.values()):
        middle, back = tmp_path / f"{number}.parquet", tmp_path / f"{number}.avro"
        copy(path, middle)
        copy(middle, back)
        assert same_records(path, back), path
    assert {"1.8", "2.0", "3.0", "3.3", "4.02"} <= versions


@pytest.mark.kafka
def test_parquet_to_a_topic_and_back(night, tmp_path, kafka_bootstrap, topic):
    env = kcp_env(kafka_bootstrap, tmp_path)
    copy(night, tmp_path / "night.parquet")
    sent = run_kcp(["cp", str(tmp_path / "night.parquet"), topic], env)
    assert sent.returncode == 0, sent.stderr
    got = run_kcp(["cp", topic, str(tmp_path / "copy.parquet"), "-c", "30"], env)
    assert got.returncode == 0, got.stderr
    copy(tmp_path / "copy.parquet", tmp_path / "back.avro")
    assert same_records(night, tmp_path / "back.avro")


def test_partition_by_writes_a_hive_folder_pyarrow_reads_as_one_dataset(night, tmp_path):
    import pyarrow.dataset

    result = run_kcp(["cp", str(night), str(tmp_path / "night.parquet"),
                      "--partition-by", "candidate.fid"], kcp_env(None, tmp_path))
    assert result.returncode == 0, result.stderr
    originals = fastavro_records(night)
    folders = sorted(p.name for p in (tmp_path / "night.parquet").iterdir())
    assert folders == [f"candidate.fid={fid}"
                       for fid in sorted({r["candidate"]["fid"] for r in originals})]
    table = pyarrow.dataset.dataset(tmp_path / "night.parquet", partitioning="hive").to_table()
    rows = sorted(zip(table["candid"].to_pylist(), table["candidate.fid"].to_pylist(),
                      strict=True))
    assert rows == sorted((r["candid"], r["candidate"]["fid"]) for r in originals)
    copy(tmp_path / "night.parquet" / "*" / "*.parquet", tmp_path / "back.avro")
    back = sorted(fastavro_records(tmp_path / "back.avro"), key=lambda r: r["candid"])
    with open(night, "rb") as stream:
        schema = fastavro.reader(stream).writer_schema
    assert avro_bytes(back, schema) == \
        avro_bytes(sorted(originals, key=lambda r: r["candid"]), schema)


def test_partition_by_a_field_of_many_values_keeps_few_files_open(night, tmp_path, monkeypatch):
    from kcp.transports import partitioned

    monkeypatch.setattr(partitioned, "MOST_OPEN", 2)
    copy(night, tmp_path / "by_object.jsonl", partition_by="candidate.rcid")
    parts = list((tmp_path / "by_object.jsonl").glob("*/part-*.jsonl"))
    values = {r["candidate"]["rcid"] for r in fastavro_records(night)}
    assert len({p.parent for p in parts}) == len(values)
    assert len(parts) > len(values)  # partitions closed to make room came back as new parts
    assert sum(len(p.read_bytes().splitlines()) for p in parts) == 30


def test_partition_by_a_field_the_record_lacks_is_bad_input(night, tmp_path):
    result = run_kcp(["cp", str(night), str(tmp_path / "x.parquet"), "--partition-by", "nope"],
                     kcp_env(None, tmp_path))
    assert result.returncode == 3
    assert b"--partition-by nope: the record has no such field" in result.stderr


def test_a_parquet_file_of_another_tool_gets_an_avro_schema_from_its_columns(tmp_path):
    import pyarrow as pa

    table = pa.table({
        "objectId": pa.array(["ZTF1", "ZTF2"]).dictionary_encode(),  # a pandas category
        "candidate": [{"jd": 2460000.5, "fid": 1}, {"jd": 2460000.6, "fid": 2}],
        "history": [[{"mag": 18.5}], []],
        "scores": pa.array([[("snn", 0.9)], []], pa.map_(pa.string(), pa.float32())),
        "count": pa.array([1, None], pa.uint32()),
        "seen": pa.array([dt.datetime(2026, 3, 6, 1, 2, 3, tzinfo=dt.UTC), None],
                         pa.timestamp("us", tz="UTC")),
        "stamp": [b"\x1f\x8b", None],
    })
    pq.write_table(table, tmp_path / "fink.parquet")
    copy(tmp_path / "fink.parquet", tmp_path / "fink.avro")
    with open(tmp_path / "fink.avro", "rb") as stream:
        records = list(fastavro.reader(stream))
    assert records[0]["candidate"] == {"jd": 2460000.5, "fid": 1}
    assert records[0]["scores"] == {"snn": pytest.approx(0.9)}
    assert records[1]["count"] is None and records[0]["objectId"] == "ZTF1"
    copy(tmp_path / "fink.avro", tmp_path / "again.parquet")
    assert pq.read_table(tmp_path / "again.parquet").to_pylist() == table.to_pylist()
