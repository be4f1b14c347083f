"""The archiver: one tar archive per topic (``'archive/{topic}.tar.gz'``), finalised when its topic
goes idle, continued by member name after a crash or for late alerts, never torn or duplicated.

The first tests drive the sinks directly (torn tails cut at many points, a fake clock for
idleness); the last ones run the installed kcp against the session's Kafka broker, SIGKILL
included.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from kcptest import KCP, avro_bytes, kcp_env, run_kcp

from kcp import Config, plan
from kcp.errors import UsageError
from kcp.message import Message
from kcp.options import Options
from kcp.plan import address_of
from kcp.synth import iter_alerts, load_ztf_like_schema
from kcp.transports import transport_for
from kcp.transports.archive import ArchiveSink, _signals_held
from kcp.transports.tar import TarSink, complete_members

SCHEMA = load_ztf_like_schema()


def ocf(alert: Any) -> bytes:
    """An alert as ZTF sends it: a single-record Avro OCF."""
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(SCHEMA), [alert])
    return out.getvalue()


def night(count: int, seed: int) -> list[tuple[Any, bytes]]:
    return [(alert, ocf(alert)) for alert in iter_alerts(count, seed=seed)]


def message(alert: Any, payload: bytes, topic: str = "ztf_20180725_programid1",
            offset: int = 0) -> Message:
    """What the pipeline hands a sink for a Kafka record: the payload and its decoded datum."""
    return Message(value=payload, datum=alert, topic=topic, partition=0, offset=offset,
                   timestamp=1_532_500_000_000 + offset, decoded=True)


def members(path: Path) -> list[tuple[str, bytes]]:
    """(name, data) of each member, read by Python's tarfile (which fails on a torn archive)."""
    with tarfile.open(path) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar]


def names_in_part(path: Path) -> list[str]:
    """The complete members of a NAME.part a crash left."""
    with open(path, "rb") as stream:
        return [m.name for m, _ in complete_members(stream, str(path), 1 << 30, torn_tail=True)]


def expected(alerts: list[tuple[Any, bytes]]) -> list[tuple[str, bytes]]:
    return [(f"{alert['candid']}.avro", payload) for alert, payload in alerts]


# -- the sinks, without a broker -----------------------------------------------------------------
@pytest.mark.parametrize("extension", [".tar.gz", ".tar"])
def test_a_torn_part_is_cut_at_any_byte_and_redelivery_makes_no_duplicate(tmp_path, extension):
    alerts = night(18, seed=3)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    sink = TarSink(str(crashed / f"night{extension}"), Options(), merge=True)
    for offset, (alert, payload) in enumerate(alerts[:10]):
        sink.write(message(alert, payload, offset=offset))
    sink.flush()  # a checkpoint: offsets 0-9 would be committed now
    for offset, (alert, payload) in enumerate(alerts[10:15], 10):
        sink.write(message(alert, payload, offset=offset))
    # A crash keeps what reached the OS and loses what was still buffered in the process.
    on_disk = (crashed / f"night{extension}.part").read_bytes()
    sink.close()
    flushed_members = None
    recovered_before = 0
    for cut in [*range(0, len(on_disk), len(on_disk) // 40 or 1), len(on_disk)]:
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        part = folder / f"night{extension}.part"
        part.write_bytes(on_disk[:cut])
        recovered = names_in_part(part)
        assert recovered == [n for n, _ in expected(alerts)][:len(recovered)]  # a prefix
        assert len(recovered) >= recovered_before  # more bytes never lose a member
        recovered_before = len(recovered)
        resumed = TarSink(str(folder / f"night{extension}"), Options(), merge=True)
        assert resumed.present == set(recovered)
        # The rerun reads again from the last commit (offset 10), or, without one, from 0.
        for offset, (alert, payload) in enumerate(alerts):
            resumed.write(message(alert, payload, offset=offset))
        resumed.close()
        assert resumed.duplicates == len(recovered)
        assert members(folder / f"night{extension}") == expected(alerts)
        assert sorted(p.name for p in folder.iterdir()) == [f"night{extension}"]
        flushed_members = len(recovered)
    assert flushed_members is not None and flushed_members >= 10  # the checkpoint was durable


def test_a_finished_archive_stays_whole_while_late_alerts_join_it(tmp_path):
    alerts = night(6, seed=4)
    path = tmp_path / "night.tar.gz"
    first = TarSink(str(path), Options(), merge=True)
    for offset, (alert, payload) in enumerate(alerts[:3]):
        first.write(message(alert, payload, offset=offset))
    first.close()
    finished = path.read_bytes()
    late = TarSink(str(path), Options(), merge=True)
    # The continued archive grows as NAME.part; NAME stays as it was until it is replaced.
    assert path.read_bytes() == finished and Path(f"{path}.part").exists()
    for offset, (alert, payload) in enumerate(alerts[2:], 2):  # alerts[2] again: skipped
        late.write(message(alert, payload, offset=offset))
        late.flush()
        assert path.read_bytes() == finished
    late.close()
    assert late.duplicates == 1
    assert members(path) == expected(alerts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.tar.gz"]


def test_a_damaged_finished_archive_is_not_cut(tmp_path):
    alerts = night(4, seed=5)
    path = tmp_path / "night.tar.gz"
    sink = TarSink(str(path), Options(), merge=True)
    for offset, (alert, payload) in enumerate(alerts):
        sink.write(message(alert, payload, offset=offset))
    sink.close()
    damaged = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(damaged)
    with pytest.raises(UsageError, match="cannot be continued, it is damaged"):
        TarSink(str(path), Options(), merge=True)
    assert path.read_bytes() == damaged  # untouched, and nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.tar.gz"]


def test_a_failed_finalisation_leaves_the_part_for_the_rerun(tmp_path):
    alerts = night(2, seed=6)
    path = tmp_path / "night.tar.gz"
    sink = TarSink(str(path), Options(), merge=True)
    sink.write(message(*alerts[0]))
    sink.flush()

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    sink.stream.close = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        sink.close()
    assert not path.exists()  # never a torn archive under the final name
    rerun = TarSink(str(path), Options(), merge=True)
    rerun.write(message(*alerts[1], offset=1))
    rerun.close()
    assert members(path) == expected(alerts)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_archives_per_topic_are_finalised_when_idle_and_continued_when_late(tmp_path):
    a, b = night(3, seed=7), night(2, seed=8)
    clock = Clock()
    (tmp_path / "arch").mkdir()  # {topic}/ below it is made as topics come
    sink = ArchiveSink(str(tmp_path / "arch" / "{topic}" / "night.tar.gz"), Options(),
                       idle_seconds=10, clock=clock)
    sink.write(message(*a[0], topic="ztf_a"))
    sink.write(message(*a[1], topic="ztf_a", offset=1))
    clock.now += 5
    sink.write(message(*b[0], topic="ztf_b"))
    assert sink.open_archives == 2
    clock.now += 4
    sink.idle()
    assert sink.open_archives == 2  # a's last record was 9 s ago
    clock.now += 1
    sink.idle()
    final_a = tmp_path / "arch" / "ztf_a" / "night.tar.gz"
    assert sink.open_archives == 1 and members(final_a) == expected(a[:2])
    assert not Path(f"{final_a}.part").exists()
    sink.write(message(*a[1], topic="ztf_a", offset=1))  # delivered again: skipped
    sink.write(message(*a[2], topic="ztf_a", offset=2))  # late: joins the night
    sink.write(message(*b[1], topic="ztf_b", offset=1))
    sink.flush()
    sink.close()
    assert sink.open_archives == 0 and sink.finalised == 3 and sink.duplicates == 1
    assert members(final_a) == expected(a)
    assert members(tmp_path / "arch" / "ztf_b" / "night.tar.gz") == expected(b)
    assert sorted(p.name for p in (tmp_path / "arch").rglob("*")) == [
        "night.tar.gz", "night.tar.gz", "ztf_a", "ztf_b"]


def test_a_part_left_by_a_crash_is_taken_up_at_start_and_finalised(tmp_path):
    """A crash after a night's last commit leaves a NAME.part no record would ever reopen."""
    alerts = night(3, seed=9)
    template = str(tmp_path / "{topic}" / "{topic}.tar.gz")
    final = tmp_path / "ztf_x" / "ztf_x.tar.gz"
    final.parent.mkdir()
    crashed = TarSink(str(final), Options(), merge=True)
    for offset, (alert, payload) in enumerate(alerts):
        crashed.write(message(alert, payload, topic="ztf_x", offset=offset))
    crashed.flush()  # every offset committed, then the crash
    crashed.file.close()
    (tmp_path / "ztf_y").mkdir()
    (tmp_path / "ztf_y" / "other.tar.gz.part").write_bytes(b"not one of ours")
    clock = Clock()
    sink = ArchiveSink(template, Options(), idle_seconds=60, clock=clock)
    assert sink.open_archives == 1 and not final.exists()
    with pytest.raises(UsageError, match="another kcp is archiving into"):
        ArchiveSink(str(tmp_path / "{topic}.tar"), Options())  # one archiver per folder
    clock.now += 60
    sink.idle()
    assert sink.open_archives == 0 and members(final) == expected(alerts)
    assert sorted(p.name for p in final.parent.iterdir()) == ["ztf_x.tar.gz"]
    sink.close()
    ArchiveSink(template, Options()).close()  # the folder is free again, nothing to take up


def test_a_signal_waits_while_archives_are_flushed_or_finalised():
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with _signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert seen == []  # a gzip stream is never left half flushed
        assert seen == [signal.SIGTERM]  # delivered, to the handler there was, right after
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_what_an_archive_template_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("archive").mkdir()
    refusals = {
        "archive/{topic}.avro": "name a .tar or .tar.gz",
        "archive/{topic}.tar.xz": "archives per topic are .tar or .tar.gz",
        "archive/{topic}-{partition}.tar.gz": "the only field an archive path may hold",
        "missing/{topic}.tar.gz": "no such folder 'missing'",
        "archive/{topic}}.tar.gz": "literal brace",
    }
    for template, problem in refusals.items():
        with pytest.raises(UsageError, match=problem):
            open_sink(template, Options())
    with pytest.raises(UsageError, match=r"\{number\} restarts with each run"):
        open_sink("archive/{topic}.tar.gz", Options(member_name="{topic}_{number}"))
    with pytest.raises(UsageError, match="--idle finalises archives per topic"):
        plan(["-"], "archive/night.tar.gz", Options(idle_seconds=60))
    sink = open_sink("archive/{topic}.tar", Options(idle_seconds=60))
    with pytest.raises(UsageError, match="comes from no topic"):
        sink.write(Message(value=b"x", datum={"candid": 1}, source="night.avro", position=1))
    sink.close()
    assert list(Path("archive").iterdir()) == []


def open_sink(text, options):
    config = Config.load()
    address = address_of(text, config)
    return transport_for(address).open_sink(address, options, config)


# -- end to end, with the broker -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def produce(bootstrap: str, topic: str, payloads: list[bytes], per_second: float | None = None
            ) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for payload in payloads:
        producer.produce(topic, payload)
        if per_second:
            producer.poll(0)
            time.sleep(1 / per_second)
    producer.flush(30)


def wait_for(condition: Any, what: str, timeout: float = 40, process: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"kcp exited ({process.returncode}) while waiting for {what}: "
                                 f"{process.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def holds(path: Path, count: int) -> bool:
    """Whether the finished archive at ``path`` exists and holds ``count`` members."""
    try:
        return path.exists() and len(members(path)) == count
    except (OSError, tarfile.TarError, EOFError):
        return False


def metric(port: int, name: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return next((line.split()[1] for line in text.splitlines() if line.startswith(name + " ")),
                None)


@pytest.mark.kafka
def test_archiver_writes_an_archive_per_topic_and_finalises_idle_ones(kafka_bootstrap,
                                                                      make_topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    prefix = f"arc{uuid.uuid4().hex[:8]}"
    first, second = make_topic(partitions=2, name=f"{prefix}_a"), make_topic(name=f"{prefix}_b")
    nights = {first: night(5, seed=11), second: night(3, seed=12)}
    for topic, alerts in nights.items():
        produce(kafka_bootstrap, topic, [payload for _, payload in alerts])
    folder = tmp_path / "archive"
    folder.mkdir()
    port = free_port()
    archiver = subprocess.Popen(
        [KCP, "cp", "-f", "-g", f"archiver-{prefix}", f"{kafka_bootstrap}:^{prefix}_.*",
         str(folder / "{topic}.tar.gz"), "--idle", "2s", "--metrics-port", f"127.0.0.1:{port}",
         "-X", "topic.metadata.refresh.interval.ms=1000"], env=env, stderr=subprocess.PIPE)
    try:
        for topic, alerts in nights.items():
            final = folder / f"{topic}.tar.gz"
            wait_for(lambda final=final, alerts=alerts: holds(final, len(alerts)),
                     f"{final.name}, finalised after 2 s idle", process=archiver)
            assert sorted(members(final)) == sorted(expected(alerts))  # partitions interleave
        wait_for(lambda: metric(port, "kcp_open_archives") == "0.0", "no archive open")
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{topic}.tar.gz" for topic in nights)

        third = make_topic(name=f"{prefix}_c")  # tonight's topic, created while archiving
        nights[third] = night(4, seed=13)
        produce(kafka_bootstrap, third, [payload for _, payload in nights[third]])
        wait_for(lambda: holds(folder / f"{third}.tar.gz", 4), "the new topic's archive",
                 process=archiver)

        late = night(7, seed=11)[5:]  # two late alerts of the first night, one sent twice
        produce(kafka_bootstrap, first, [late[0][1], late[1][1], late[0][1]])
        nights[first] += late
        wait_for(lambda: holds(folder / f"{first}.tar.gz", 7), "the late alerts in the archive",
                 process=archiver)
    finally:
        archiver.send_signal(signal.SIGTERM)
        status = archiver.wait(20)
    assert status == 0, archiver.stderr.read().decode()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.tar.gz" for t in nights)
    for topic, alerts in nights.items():
        assert sorted(members(folder / f"{topic}.tar.gz")) == sorted(expected(alerts))


@pytest.mark.kafka
def test_archiver_killed_mid_night_resumes_without_loss_or_duplicates(kafka_bootstrap,
                                                                      make_topic, tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic()
    group = f"archiver-{topic}"
    alerts = night(300, seed=21)
    # The night arrives as it would, fifty alerts a second: the archiver is always mid-way.
    sender = threading.Thread(target=produce, args=(kafka_bootstrap, topic,
                                                    [p for _, p in alerts], 50))
    sender.start()
    folder = tmp_path / "archive"
    folder.mkdir()
    final, part = folder / f"{topic}.tar.gz", folder / f"{topic}.tar.gz.part"
    args = ["cp", "-g", group, topic, str(folder / "{topic}.tar.gz"),
            "-X", "session.timeout.ms=6000"]  # the killed member's partitions free up sooner
    watcher = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})

    def committed() -> int:
        return watcher.committed([TopicPartition(topic, 0)], timeout=10)[0].offset

    archiver = subprocess.Popen([KCP, *args, "-f"], env=env, stderr=subprocess.PIPE)
    try:
        # Kill it in the middle of the night, between two checkpoints: alerts still arriving,
        # some committed, more in the .part than committed (the rerun gets those again).
        wait_for(lambda: committed() > 20 and len(names_in_part(part)) > committed(),
                 "members past the last commit", process=archiver)
        archiver.send_signal(signal.SIGKILL)
        archiver.wait(10)
    finally:
        archiver.kill()
    assert sender.is_alive(), "the night was over before the archiver was killed"
    assert not final.exists()  # never finalised, so never under the final name
    kept = names_in_part(part)
    at_kill = committed()
    watcher.close()
    # Offsets are committed only for members made durable first; those after the commit are
    # delivered again to the rerun, which must skip them.
    assert 0 < at_kill <= len(kept) < 300, (at_kill, len(kept))
    assert kept == [n for n, _ in expected(alerts)][:len(kept)]
    print(f"killed with {len(kept)} complete members in .part, {at_kill} committed: "
          f"{len(kept) - at_kill} delivered again")
    sender.join()

    rerun = run_kcp(args, env, timeout=120)  # no -f: stops at the end of the night
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in folder.iterdir()) == [final.name]
    got = members(final)  # tarfile reads it whole
    assert [name for name, _ in got] == [name for name, _ in expected(alerts)]  # each once
    assert got == expected(alerts)  # the very payloads
    for (alert, _), (_, data) in zip(alerts, got, strict=True):
        decoded = list(fastavro.reader(io.BytesIO(data)))
        assert avro_bytes(decoded, SCHEMA) == avro_bytes([alert], SCHEMA)
