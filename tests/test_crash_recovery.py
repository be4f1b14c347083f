"""Delivery guarantees under SIGKILL: the copier dies mid-run, its rerun completes the copy."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kcptest import KCP, kcp_env, run_kcp

pytestmark = pytest.mark.kafka
MESSAGES = 60_000
PACED = ["-X", "max.partition.fetch.bytes=4096", "-X", "fetch.max.bytes=4096",
         "-X", "message.max.bytes=4096"]


def fill(bootstrap: str, topic: str, count: int = MESSAGES) -> None:
    # Small record batches, so that a copier fetching small amounts runs long enough to be
    # killed in the middle (see PACED).
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "batch.num.messages": 5})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, b'{"id": %d, "pad": "%s"}' % (i, b"x" * 200))
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(30)


def high_watermark(consumer: Consumer, topic: str) -> int:
    return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1]


def ids_in(bootstrap: str, topic: str, isolation: str, at_least: int = MESSAGES) -> list[int]:
    """Every id in ``topic``, waiting (up to a minute) until there are ``at_least``.

    A copier killed mid-transaction pins the last stable offset until the coordinator aborts
    its transaction (after kcp's --timeout): read_committed readers wait for that.
    """
    import orjson

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                         "isolation.level": isolation, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    ids: list[int] = []
    deadline = time.monotonic() + 60
    at_end = False
    while time.monotonic() < deadline and not (at_end and len(ids) >= at_least):
        at_end = False
        for record in consumer.consume(1000, 1):
            if record.error() is None:
                ids.append(orjson.loads(record.value())["id"])
            else:
                at_end = True
    consumer.close()
    return ids


def kill_mid_copy(args: list[str], env: dict, bootstrap: str, destination: str) -> None:
    # read_uncommitted: otherwise the "end" is the last stable offset, which moves only when
    # a transaction commits, and the kill would always land just after a commit.
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks",
                        "isolation.level": "read_uncommitted"})
    copier = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while high_watermark(watcher, destination) < 3_000:
            assert copier.poll() is None, "the copy finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert copier.poll() is None, "the copy finished before it could be killed"
        copier.send_signal(signal.SIGKILL)
        copier.wait(10)
    finally:
        copier.kill()
        watcher.close()


def test_exactly_once_survives_sigkill(kafka_bootstrap, make_topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic()
    make_topic(name=f"{topic}_eos")
    fill(kafka_bootstrap, topic)
    args = ["cp", topic, f"{topic}_eos", "-g", "eos", "--exactly-once", "--timeout", "10", *PACED]
    kill_mid_copy(args, env, kafka_bootstrap, f"{topic}_eos")
    rerun = run_kcp(args, env, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    ids = ids_in(kafka_bootstrap, f"{topic}_eos", "read_committed")
    assert sorted(ids) == list(range(MESSAGES))  # each message exactly once
    # The killed copier did write records that were never committed: they are invisible.
    assert len(ids_in(kafka_bootstrap, f"{topic}_eos", "read_uncommitted")) > MESSAGES


def test_at_least_once_resume_loses_nothing(kafka_bootstrap, make_topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic()
    make_topic(name=f"{topic}_alo")
    fill(kafka_bootstrap, topic)
    args = ["cp", topic, f"{topic}_alo", "-g", "alo", *PACED]
    kill_mid_copy(args, env, kafka_bootstrap, f"{topic}_alo")
    rerun = run_kcp(args, env, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    ids = ids_in(kafka_bootstrap, f"{topic}_alo", "read_committed")
    assert set(ids) == set(range(MESSAGES))
    assert len(ids) < 2 * MESSAGES  # the rerun started from the group's commits


def test_file_copy_resumes_after_sigkill_and_is_never_torn(kafka_bootstrap, make_topic, tmp_path):
    import orjson

    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic()
    fill(kafka_bootstrap, topic)
    final = tmp_path / "night.jsonl"
    partial = tmp_path / "night.jsonl.part"
    args = ["cp", topic, str(final), "-g", "archiver", *PACED]
    copier = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not partial.exists() or partial.stat().st_size < 200_000:
            assert copier.poll() is None, "the copy finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        copier.send_signal(signal.SIGKILL)
        copier.wait(10)
    finally:
        copier.kill()
    assert not final.exists()  # a crash never leaves a torn file under the final name
    rerun = run_kcp(args, env, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert not partial.exists()
    ids = [orjson.loads(line)["id"] for line in final.read_bytes().splitlines()]
    assert set(ids) == set(range(MESSAGES))
    assert len(ids) < 2 * MESSAGES


def test_a_torn_avro_part_is_cut_and_continued(tmp_path):
    import fastavro

    from kcp import Options, plan
    from kcp.synth import write_night

    night = tmp_path / "night.avro"
    write_night(night, 20, seed=5)
    data = night.read_bytes()
    partial = tmp_path / "archive.avro.part"
    partial.write_bytes(data[: len(data) - 20_000])  # the crash tore the last block
    with open(partial, "rb") as stream:
        kept = 0
        try:
            for _ in fastavro.reader(stream):
                kept += 1
        except Exception:
            pass  # the torn tail
    options = Options(group="archiver")  # a resumable copy continues its file
    plan([str(night)], str(tmp_path / "archive.avro"), options).execute()
    with open(tmp_path / "archive.avro", "rb") as stream:
        records = list(fastavro.reader(stream))
    original = [r["candid"] for r in fastavro.reader(open(night, "rb"))]
    assert 0 < kept < 20
    assert [r["candid"] for r in records] == original[:kept] + original
