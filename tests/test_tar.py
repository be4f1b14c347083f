"""Tar archives: ZTF's nightly layout read and written as streams, hostile archives refused.

Real archives are read in place from ../shared/data/ztf_tar (tests skip without them); others
are built here, hostile ones header by header. The end-to-end tests run the installed kcp against
the session's Kafka broker.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from kcptest import json_lines, kcp_env, run_kcp, shared

from kcp.codec import Schema, write_body
from kcp.errors import BadInput, UsageError
from kcp.message import Message
from kcp.options import Options
from kcp.synth import iter_alerts, load_ztf_like_schema, write_night
from kcp.transports.tar import MemberNames, TarSink, cut_torn_tar_tail

REAL = {"ZTF18abxhyqv.tar.gz": 4, "ZTF18acruwxq.tar.gz": 3, "recent_alerts.tar.gz": 22,
        "tar.tst.gz": 21}


def ocf(record: Any, definition: Any) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(definition), [record])
    return out.getvalue()


@pytest.fixture(scope="module")
def alerts() -> list[bytes]:
    """Five synthetic alerts, each a single-record OCF as ZTF archives hold them."""
    definition = load_ztf_like_schema()
    return [ocf(alert, definition) for alert in iter_alerts(5, seed=5)]


def member(name: str, data: bytes = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_534_665_602
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def raw(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A member as tar writes it, whatever its header claims."""
    return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)


def archive(members: list[tuple[tarfile.TarInfo, bytes]], compression: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def records_of(data: bytes) -> list[Any]:
    """Each JSON Lines document of kcp's output."""
    return list(json_lines(data))


def member_records(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, schemaless Avro encoding) of each member of a real archive, read by tarfile."""
    with tarfile.open(path) as tar:
        for info in tar:
            stream = io.BytesIO(tar.extractfile(info).read())
            reader = fastavro.reader(stream)
            for record in reader:
                yield info.name, write_body(record, Schema(reader.writer_schema))


def members_of(path: str | Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


# -- reading -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REAL)
def test_real_archives_read_whole_every_schema_version(kcp, name):
    path = shared("ztf_tar", name)
    result = kcp("cp", str(path), "-")
    assert result.exit_code == 0, result.stderr
    documents = records_of(result.stdout_bytes)
    assert len(documents) == REAL[name]
    expected = list(member_records(path))
    assert [f"{d['candid']}.avro" for d in documents] == [n for n, _ in expected]


def test_real_archive_records_are_exact(kcp):
    """Read back into Avro, each member's record is the one tarfile + fastavro read."""
    path = shared("ztf_tar", "ZTF18abxhyqv.tar.gz")  # schema 3.1 and 3.2 in one archive
    assert kcp("cp", str(path), "copy.tar").exit_code == 0
    assert list(member_records(Path("copy.tar"))) == list(member_records(path))


def test_stdin_and_odd_names_are_sniffed(kcp):
    data = shared("ztf_tar", "tar.tst.gz").read_bytes()  # JPEG stamps, not a .tar.gz name
    piped = kcp("convert", stdin=data)
    assert piped.exit_code == 0, piped.stderr
    assert len(records_of(piped.stdout_bytes)) == 21
    Path("odd.name").write_bytes(data)
    assert records_of(kcp("cp", "./odd.name", "-").stdout_bytes) == records_of(piped.stdout_bytes)


@pytest.mark.parametrize("extension", [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"])
def test_every_compression_round_trips(kcp, tmp_path, extension):
    night = tmp_path / "night.avro"
    write_night(night, 6, seed=2)
    target = f"night{extension}"
    assert kcp("cp", str(night), target).exit_code == 0
    assert not Path(f"{target}.part").exists()
    infos = members_of(target)
    alerts = list(iter_alerts(6, seed=2))
    assert [i.name for i in infos] == [f"{a['candid']}.avro" for a in alerts]
    assert all(i.isreg() and i.mode == 0o644 and i.uid == 0 and i.uname == "" for i in infos)
    back = kcp("cp", target, "-")
    assert back.exit_code == 0, back.stderr
    assert records_of(back.stdout_bytes) == records_of(kcp("cp", str(night), "-").stdout_bytes)
    if extension != ".tar.bz2":  # bzip2 is known by its name only, not sniffed
        assert kcp("convert", stdin=Path(target).read_bytes()).stdout_bytes == back.stdout_bytes


def test_member_formats_and_names(kcp, tmp_path):
    night = tmp_path / "night.avro"
    write_night(night, 3, seed=4)
    expected = records_of(kcp("cp", str(night), "-").stdout_bytes)
    for fmt, extension in (("fits", ".fits"), ("json", ".json"), ("avro", ".avro")):
        made = kcp("cp", str(night), f"{fmt}.tar", "--member-format", fmt,
                   "--name", "{objectId}_{candidate.candid}_{number:03d}")
        assert made.exit_code == 0, made.stderr
        names = [i.name for i in members_of(f"{fmt}.tar")]
        assert names == [f"{a['objectId']}_{a['candid']}_{n:03d}{extension}"
                         for n, a in enumerate(records_of_avro(night), 1)]
        back = kcp("cp", f"{fmt}.tar", "-", "--schema", str(schema_file(tmp_path, night)))
        assert back.exit_code == 0, back.stderr
        assert records_of(back.stdout_bytes) == expected
    wrong = kcp("cp", str(night), "x.tar", "--member-format", "avro", "--name", "{a[0]}")
    assert wrong.exit_code == 2 and "--name" in wrong.stderr
    missing = kcp("cp", str(night), "y.tar", "--name", "{nothing}")
    assert missing.exit_code == 3 and "no nothing to name the tar member by" in missing.stderr


def records_of_avro(path: Path) -> list[Any]:
    with open(path, "rb") as stream:
        return list(fastavro.reader(stream))


def schema_file(tmp_path: Path, night: Path) -> Path:
    with open(night, "rb") as stream:
        definition = fastavro.reader(stream).writer_schema
    path = tmp_path / "alert.avsc"
    path.write_bytes(orjson.dumps(definition))
    return path


def test_member_names_default_per_schema():
    names = MemberNames(None)
    assert names(Message(datum={"candid": 12, "objectId": "ZTF"}), 1) == "12"
    assert names(Message(datum={"diaSourceId": 7, "alertId": 3}), 1) == "7"
    assert names(Message(datum={"alertId": 3, "diaSourceId": None}), 1) == "3"
    assert names(Message(datum={"x": 1}, topic="t", partition=2, offset=9), 1) == "t-2-9"
    assert names(Message(datum={"x": 1}), 41) == "41"
    assert MemberNames("{objectId}/../{x}")(Message(datum={"objectId": "a", "x": 1}), 1) \
        == "a_.._1"  # never a path
    with pytest.raises(UsageError):
        MemberNames("{0}")
    with pytest.raises(BadInput):
        MemberNames("{topic}")(Message(datum={}), 1)


def test_json_and_fits_members_and_multi_record_members_are_read(kcp, alerts):
    definition = load_ztf_like_schema()
    record = next(iter_alerts(1, seed=5))
    fits_member = kcp("cp", "-", "one.fits", "--from", "avro", stdin=alerts[0])
    assert fits_member.exit_code == 0, fits_member.stderr
    two = io.BytesIO()
    fastavro.writer(two, fastavro.parse_schema(definition), list(iter_alerts(2, seed=5)))
    data = archive([member("a.fits", Path("one.fits").read_bytes()),
                    member("b.avro", two.getvalue()), member("readme.txt", b'{"note": 1}')])
    result = kcp("cp", "-", "-", stdin=data)
    assert result.exit_code == 0, result.stderr
    candids = [d.get("candid") for d in records_of(result.stdout_bytes)]
    assert candids == [record["candid"], record["candid"], candids[2], None]


# -- hostile archives ----------------------------------------------------------------------------
def hostile(alerts: list[bytes]) -> dict[str, tuple[bytes, str]]:
    """Archives with one bad member between good ones: (bytes, the message kcp must give)."""
    cases = {
        "dotdot": (member("../../evil.avro", alerts[2]),
                   "member ../../evil.avro: an unsafe member name"),
        "absolute": (member("/tmp/evil.avro", alerts[2]),
                     "member /tmp/evil.avro: an unsafe member name"),
        "symlink": (member("s.avro", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
                    "member s.avro: a symbolic link, not a regular file"),
        "hardlink": (member("h.avro", type=tarfile.LNKTYPE, linkname="1.avro"),
                     "member h.avro: a hard link, not a regular file"),
        "device": (member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
                   "member null: a character device, not a regular file"),
        "fifo": (member("pipe", type=tarfile.FIFOTYPE), "member pipe: a FIFO, not a regular file"),
    }
    return {case: (archive([member("1.avro", alerts[0]), bad, member("2.avro", alerts[1])]),
                   problem) for case, (bad, problem) in cases.items()}


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_hostile_members_are_bad_input_under_the_policy(kcp, tmp_path, alerts, case):
    data, problem = hostile(alerts)[case]
    Path("night.tar").write_bytes(data)
    around = sorted(tmp_path.parent.parent.iterdir())
    failed = kcp("cp", "night.tar", "out.jsonl")
    assert failed.exit_code == 3
    assert failed.stderr.strip().startswith(f"kcp: night.tar:{problem}")
    assert len(failed.stderr.strip().splitlines()) == 1
    assert len(Path("out.jsonl").read_bytes().splitlines()) == 1  # what came before is kept
    skipped = kcp("cp", "night.tar", "-", "--on-error", "skip", "--progress")
    assert skipped.exit_code == 0
    assert len(records_of(skipped.stdout_bytes)) == 2
    assert "1 bad record skipped" in skipped.stderr
    # Reading wrote nothing but what was named, and nowhere outside.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.tar", "out.jsonl"]
    assert sorted(tmp_path.parent.parent.iterdir()) == around
    assert not Path("/tmp/evil.avro").exists()


def test_directories_are_skipped_quietly(kcp, alerts):
    data = archive([member("night", type=tarfile.DIRTYPE), member("night/1.avro", alerts[0])])
    result = kcp("cp", "-", "-", stdin=data)
    assert result.exit_code == 0 and result.stderr == ""
    assert len(records_of(result.stdout_bytes)) == 1


def test_absurd_declared_sizes(kcp, alerts):
    claim = member("huge.avro", size=100 << 30)[0]  # a header claiming 100 GB, then the end
    data = raw(*member("1.avro", alerts[0])) + raw(claim) + alerts[1]
    result = kcp("cp", "-", "-", stdin=data)
    assert result.exit_code == 3
    assert "member huge.avro: 107,374,182,400 bytes, over the 268,435,456-byte limit" \
        in result.stderr
    skipped = kcp("cp", "-", "-", "--on-error", "skip", "--progress", stdin=data)
    assert skipped.exit_code == 0 and len(records_of(skipped.stdout_bytes)) == 1
    assert "2 bad records skipped" in skipped.stderr  # the member, then the truncated archive
    small = kcp("cp", "-", "-", "--max-member-size", "1", stdin=archive(
        [member("big.avro", bytes(2 << 20)), member("1.avro", alerts[0])]))
    assert small.exit_code == 3 and "over the 1,048,576-byte limit" in small.stderr
    pax = tarfile.TarInfo("pax")
    pax.type, pax.size = tarfile.XHDTYPE, 100 << 30
    claimed = kcp("cp", "-", "-", stdin=pax.tobuf(tarfile.GNU_FORMAT) + bytes(4096))
    assert claimed.exit_code == 3 and "extension header claims" in claimed.stderr


def bomb(size: int) -> bytes:
    """A tar.gz of one member of ``size`` zero bytes, compressed a thousandfold."""
    header = member("zeros.avro", size=size)[0].tobuf(tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [compressor.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        chunks.append(compressor.compress(chunk))
    chunks.append(compressor.compress(bytes(2 * 512)))
    return b"".join(chunks) + compressor.flush()


def test_gzip_bomb_archive_stays_bounded(tmp_path):
    """A 300 MB member in a 300 kB tar.gz: reported, and never held in memory."""
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(bomb(300 << 20))
    env = kcp_env(None, tmp_path)
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
               "capture_output=True); print(r.returncode, resource.getrusage("
               "resource.RUSAGE_CHILDREN).ru_maxrss); sys.stderr.buffer.write(r.stderr)")
    for policy, status in (("fail", 3), ("skip", 0)):
        result = subprocess.run([sys.executable, "-c", measure, str(Path(sys.executable).with_name(
            "kcp")), "cp", str(path), "-", "--on-error", policy], env=env, capture_output=True,
            timeout=120)
        code, peak_kb = map(int, result.stdout.split())
        assert code == status, result.stderr
        assert peak_kb < 200_000, f"peak RSS {peak_kb} kB"
        if policy == "fail":
            assert b"bomb.tar.gz:member zeros.avro: 314,572,800 bytes, over the" in result.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[: len(d) // 2], "truncated archive"),
    (lambda d: d[:200] + bytes(x ^ 0x55 for x in d[200:400]) + d[400:],
     "corrupt compressed data"),
    (lambda d: gzip.compress(b"not a tar archive at all " * 40), "not a tar archive"),
])
def test_damaged_archives_end_with_bad_input(kcp, alerts, damage, message):
    Path("night.tar.gz").write_bytes(damage(archive(
        [member(f"{n}.avro", a) for n, a in enumerate(alerts)], "gz")))
    result = kcp("cp", "night.tar.gz", "-")
    assert result.exit_code == 3
    assert result.stderr.startswith("kcp: night.tar.gz") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- writing, resuming ---------------------------------------------------------------------------
def test_uncompressed_tar_continues_after_a_crash(tmp_path, alerts):
    options = Options()
    options.schemas.default = Schema(load_ztf_like_schema())
    path = tmp_path / "night.tar"
    sink = TarSink(str(path), options)
    for number, payload in enumerate(alerts[:3]):
        sink.write(Message(value=payload, timestamp=1_600_000_000_000 + number, topic="t",
                           partition=0, offset=number, decoded=True))
    sink.flush()
    sink.file.close()  # a crash: no end-of-archive, NAME.part left behind
    partial = tmp_path / "night.tar.part"
    with open(partial, "ab") as stream:
        stream.write(b"torn member")
    resumed = TarSink(str(path), options, resume=True)
    resumed.write(Message(value=alerts[3], topic="t", partition=0, offset=3, decoded=True))
    resumed.close()
    assert [i.name for i in members_of(path)] == ["t-0-0.avro", "t-0-1.avro", "t-0-2.avro",
                                                  "t-0-3.avro"]
    assert members_of(path)[0].mtime == 1_600_000_000  # from the Kafka timestamp
    assert not partial.exists()
    with open(path, "r+b") as stream:  # a finished archive loses only its end-of-archive blocks
        end = cut_torn_tar_tail(stream)
    assert end % 512 == 0 and os.path.getsize(path) == end
    assert [i.name for i in members_of(path)][-1] == "t-0-3.avro"
    with pytest.raises(UsageError, match="compressed tar cannot be continued"):
        TarSink(str(tmp_path / "night.tar.gz"), options, resume=True)


# -- end to end, with the broker -----------------------------------------------------------------
@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return kcp_env(kafka_bootstrap, tmp_path)


@pytest.mark.kafka
def test_replay_a_night_and_archive_it_again(env, topic, tmp_path, kafka_bootstrap):
    night = shared("ztf_tar", "recent_alerts.tar.gz")
    replay = run_kcp(["cp", str(night), f"{kafka_bootstrap}:{topic}"], env)
    assert replay.returncode == 0, replay.stderr
    out = tmp_path / "out.tar.gz"
    archived = run_kcp(["cp", topic, str(out)], env)
    assert archived.returncode == 0, archived.stderr
    original, copy = members_of(night), members_of(out)
    assert [i.name for i in copy] == [i.name for i in original]
    assert list(member_records(out)) == list(member_records(night))
    with tarfile.open(night) as a, tarfile.open(out) as b:  # the members are the very payloads
        assert all(a.extractfile(x).read() == b.extractfile(y).read()
                   for x, y in zip(a, b, strict=True))


@pytest.mark.kafka
def test_nightly_archive_from_a_topic_and_its_uses(env, topic, tmp_path):
    night = tmp_path / "night.avro"
    write_night(night, 30, seed=9)
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    archive_path = tmp_path / "ztf_public_20180725.tar.gz"
    made = run_kcp(["cp", topic, str(archive_path)], env)
    assert made.returncode == 0 and made.stdout == b"", made.stderr
    alerts = list(iter_alerts(30, seed=9))
    assert [i.name for i in members_of(archive_path)] == [f"{a['candid']}.avro" for a in alerts]
    as_json = run_kcp(["cp", str(archive_path), "-"], env)
    piped = run_kcp(["convert"], env, stdin=archive_path.read_bytes())
    assert as_json.returncode == piped.returncode == 0
    assert [d["candid"] for d in json_lines(as_json.stdout)] == [a["candid"] for a in alerts]
    assert as_json.stdout == piped.stdout
    fits_tar = tmp_path / "night-fits.tar"
    converted = run_kcp(["cp", str(archive_path), str(fits_tar), "--member-format", "fits"], env)
    assert converted.returncode == 0 and converted.stderr == b"", converted.stderr
    assert run_kcp(["cp", str(fits_tar), "-"], env).stdout == as_json.stdout
    plain = tmp_path / "plain.tar"  # records without an id: named by topic, partition, offset
    assert run_kcp(["cp", topic, str(plain), "--fields", "objectId", "--member-format", "json",
                    "-c", "2"], env).returncode == 0
    assert [i.name for i in members_of(plain)] == [f"{topic}-0-0.json", f"{topic}-0-1.json"]


@pytest.mark.kafka
def test_records_of_a_multi_record_payload_extract_as_one_file_each(env, make_topic, tmp_path,
                                                                    kafka_bootstrap):
    """A message holding three records (an OCF of one block) named all three members
    TOPIC-0-0.avro: `tar -x` kept the last. Each is named by its place in the message now, the
    same names with -j 2, and a --map returning two records of each numbers them below that."""
    from confluent_kafka import Producer

    definition = {"type": "record", "name": "p", "fields": [{"name": "n", "type": "int"}]}
    three = io.BytesIO()
    fastavro.writer(three, fastavro.parse_schema(definition), [{"n": 1}, {"n": 2}, {"n": 3}])
    topic = make_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, three.getvalue())
    producer.produce(topic, ocf({"n": 4}, definition))
    assert producer.flush(30) == 0
    stage = tmp_path / "stage.py"
    stage.write_text("def twice(r):\n    return [r, {'n': r['n'] + 100}]\n")
    plain = {"0-0-1": 1, "0-0-2": 2, "0-0-3": 3, "0-1": 4}  # partition-offset[-record]
    expected = {(): plain, ("-j", "2"): plain,
                ("--map", f"{stage}:twice"): {
                    "0-0-1.1": 1, "0-0-1.2": 101, "0-0-2.1": 2, "0-0-2.2": 102, "0-0-3.1": 3,
                    "0-0-3.2": 103, "0-1-1": 4, "0-1-2": 104}}
    for options, numbers in expected.items():
        archive = tmp_path / "night.tar"
        made = run_kcp(["cp", topic, str(archive), *options], env)
        assert made.returncode == 0 and made.stderr == b"", made.stderr
        folder = tmp_path / f"x{len(options)}{options[:1]}"
        folder.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(folder)], check=True)
        extracted = {}
        for path in folder.iterdir():
            with open(path, "rb") as stream:
                extracted[path.name] = [r["n"] for r in fastavro.reader(stream)]
        assert extracted == {f"{topic}-{k}.avro": [n] for k, n in numbers.items()}, options
        # Read again, the names are the same: an archive merged by name takes each record once.
        assert [i.name for i in members_of(archive)] == [f"{topic}-{k}.avro" for k in numbers]
