"""--exactly-once between two independent clusters (two KRaft brokers), through crashes.

The copier is SIGKILLed at seeded random points and rerun; a read_committed reader of the
destination must then see every source record once, with its key, headers, timestamp and
partition. The source positions live in the destination (kcp/transports/kafka/offsets.py).
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kcptest import KCP, kcp_env, run_kcp

pytestmark = pytest.mark.kafka
# Small fetches and batches: the copy runs long enough to be killed in the middle of it.
PACED = ["-X", "max.partition.fetch.bytes=2048", "-X", "fetch.max.bytes=2048",
         "-X", "message.max.bytes=2048",
         # A killed member holds its partitions this long: the broker's minimum.
         "-X", "session.timeout.ms=6000", "--timeout", "15"]
STAMP = 1_600_000_000_000


def create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        known = admin.list_topics(name, timeout=10).topics.get(name)
        if known is not None and known.error is None and all(
                p.leader >= 0 for p in known.partitions.values()):
            return
        time.sleep(0.05)
    raise TimeoutError(name)


def fill(bootstrap: str, topic: str, count: int, partitions: int) -> list[tuple]:
    """``count`` records with keys, headers and timestamps; returns what a copy must hold."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "batch.num.messages": 10})
    expected = []
    for i in range(count):
        record = (i % partitions, b"%s-%d" % (topic.encode(), i), b'{"id": %d, "pad": "%s"}'
                  % (i, b"x" * 100), [("seq", b"%d" % i)], STAMP + i)
        while True:
            try:
                producer.produce(topic, record[2], record[1], partition=record[0],
                                 headers=record[3], timestamp=record[4])
                break
            except BufferError:
                producer.poll(0.1)
        expected.append(record)
    assert producer.flush(30) == 0
    return expected


def written(bootstrap: str, topics: list[str]) -> int:
    """Offsets used in ``topics``, committed or not (read_uncommitted high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watch",
                         "isolation.level": "read_uncommitted"})
    try:
        metadata = consumer.list_topics(timeout=5).topics
        total = 0
        for topic in topics:
            if topic in metadata:
                for partition in metadata[topic].partitions:
                    # A topic just created may have no leader yet: it counts as empty.
                    with contextlib.suppress(KafkaException):
                        total += consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=5)[1]
        return total
    finally:
        consumer.close()


def committed_records(bootstrap: str, topic: str, expected: int) -> list[tuple]:
    """Everything a read_committed reader sees in ``topic``, once ``expected`` records are
    there and nothing more comes for two seconds (a duplicate would show meanwhile)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    got: list[tuple] = []
    deadline = time.monotonic() + 90
    quiet_since = time.monotonic()
    assigned = False
    while time.monotonic() < deadline and (len(got) < expected
                                           or time.monotonic() - quiet_since < 2):
        if not assigned:  # a mirror creates the copy of a new topic when it notices it
            known = consumer.list_topics(timeout=10).topics.get(topic)
            assigned = known is not None and bool(known.partitions)
            if assigned:
                consumer.assign([TopicPartition(topic, p, 0) for p in known.partitions])
            else:
                time.sleep(0.5)
                continue
        batch = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        if batch:
            quiet_since = time.monotonic()
        got += [(m.partition(), m.key(), m.value(), m.headers(), m.timestamp()[1])
                for m in batch]
    consumer.close()
    return got


def kill_when(copier: subprocess.Popen, bootstrap: str, topics: list[str], target: int) -> None:
    """SIGKILL ``copier`` once ``target`` offsets are used in the destination ``topics``."""
    deadline = time.monotonic() + 60
    while written(bootstrap, topics) < target:
        assert copier.poll() is None, f"the copy ended before it could be killed: " \
                                      f"{copier.stderr.read() if copier.stderr else ''}"
        assert time.monotonic() < deadline, "the copy made no progress"
        time.sleep(0.02)
    copier.send_signal(signal.SIGKILL)
    copier.wait(10)


def topic_pair(source_bootstrap: str, destination_bootstrap: str, partitions: int,
               count: int, *options: str) -> tuple[str, list[tuple], list[str]]:
    """A filled source topic and an empty destination of as many partitions on the other
    cluster: (the destination, the records it must end with, the cp arguments)."""
    source = f"eos_{uuid.uuid4().hex[:8]}"
    create(source_bootstrap, source, partitions)
    expected = fill(source_bootstrap, source, count, partitions)
    destination = f"{source}_copy"
    create(destination_bootstrap, destination, partitions)
    args = ["cp", *options, f"{source_bootstrap}:{source}",
            f"{destination_bootstrap}:{destination}", "-g", f"{source}-copier",
            "--exactly-once", "--keep-partition", *PACED]
    return destination, expected, args


def test_copy_between_clusters_survives_sigkill_exactly_once(
        kafka_bootstrap, second_kafka_bootstrap, tmp_path):
    rng = random.Random(16)
    env = kcp_env(None, tmp_path)
    destination, expected, args = topic_pair(kafka_bootstrap, second_kafka_bootstrap, 3, 6000)
    for _ in range(2):
        # Somewhere in the next 1 to 2.5 thousand records (aborted ones count too).
        target = written(second_kafka_bootstrap, [destination]) + rng.randint(1000, 2500)
        copier = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
        try:
            kill_when(copier, second_kafka_bootstrap, [destination], target)
        finally:
            copier.kill()
    rerun = run_kcp(args, env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    got = committed_records(second_kafka_bootstrap, destination, len(expected))
    assert sorted(got) == sorted(expected)  # each record once, all of it kept
    # The killed copiers had written records that were never committed: they stay invisible.
    assert written(second_kafka_bootstrap, [destination]) > len(expected)
    # kcp ls: the offsets are an upper bound there (markers, aborted records); the last
    # record is found before the final commit marker.
    listed = run_kcp(["ls", f"{second_kafka_bootstrap}:{destination}", "--json"], env)
    row = orjson.loads(listed.stdout)
    assert (row["exact"], row["first"], row["last"]) == (False, STAMP, STAMP + len(expected) - 1)
    assert row["messages"] > len(expected)
    # kcp lag: a group that read every committed record has nothing left to read.
    group = f"{second_kafka_bootstrap}:reader"
    read = run_kcp(["consume", "-g", "reader", f"{second_kafka_bootstrap}:{destination}",
                    "--raw"], env)
    assert read.returncode == 0 and read.stdout.count(b'"pad"') == len(expected), read.stderr
    lag = run_kcp(["lag", group, "--json"], env)
    assert [orjson.loads(line)["lag"] for line in lag.stdout.splitlines()] == [0, 0, 0]


def test_mirror_following_new_topics_survives_sigkill_exactly_once(
        kafka_bootstrap, second_kafka_bootstrap, tmp_path):
    rng = random.Random(618)
    env = kcp_env(None, tmp_path)
    prefix = f"eosm{uuid.uuid4().hex[:6]}"
    first, second = f"{prefix}_first", f"{prefix}_second"
    create(kafka_bootstrap, first, 2)
    expected = {first: fill(kafka_bootstrap, first, 3000, 2)}
    copies = [f"copy_{first}", f"copy_{second}"]
    args = ["cp", "-f", f"{kafka_bootstrap}:^{prefix}_.*", f"{second_kafka_bootstrap}:",
            "--rename", "copy_{topic}", "-g", "eos-mirror", "--exactly-once", *PACED]
    mirror = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    try:
        kill_when(mirror, second_kafka_bootstrap, copies, rng.randint(500, 2000))
    finally:
        mirror.kill()
    # A topic created while no mirror runs, then one created while the rerun mirrors.
    create(kafka_bootstrap, second, 3)
    expected[second] = fill(kafka_bootstrap, second, 1500, 3)
    mirror = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    third = f"{prefix}_third"
    copies.append(f"copy_{third}")
    try:
        kill_when(mirror, second_kafka_bootstrap, copies,
                  written(second_kafka_bootstrap, copies) + rng.randint(300, 1200))
    finally:
        mirror.kill()
    mirror = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        create(kafka_bootstrap, third, 1)  # picked up by the running mirror
        expected[third] = fill(kafka_bootstrap, third, 500, 1)
        for topic, records in expected.items():
            got = committed_records(second_kafka_bootstrap, f"copy_{topic}", len(records))
            assert sorted(got) == sorted(records), topic
    finally:
        mirror.terminate()
        assert mirror.wait(30) == 0, mirror.stderr.read()


def test_a_stalled_copier_is_fenced_by_the_one_taking_over(
        kafka_bootstrap, second_kafka_bootstrap, tmp_path):
    env = kcp_env(None, tmp_path)
    destination, expected, args = topic_pair(kafka_bootstrap, second_kafka_bootstrap, 1, 3000,
                                             "-f")
    stalled = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
    successor = None
    try:
        deadline = time.monotonic() + 60
        while written(second_kafka_bootstrap, [destination]) < 500:
            assert stalled.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        stalled.send_signal(signal.SIGSTOP)  # alive, holding an open transaction
        successor = subprocess.Popen([KCP, *args], env=env, stderr=subprocess.PIPE)
        got = committed_records(second_kafka_bootstrap, destination, len(expected))
        stalled.send_signal(signal.SIGCONT)  # its next commit meets the fence
        status = stalled.wait(30)
        error = stalled.stderr.read().decode()
        assert status == 4, error
        assert "fenced" in error and len(error.strip().splitlines()) == 1, error
        time.sleep(1)
        got_after = committed_records(second_kafka_bootstrap, destination, len(expected))
    finally:
        stalled.kill()
        if successor is not None:
            successor.terminate()
            assert successor.wait(30) == 0, successor.stderr.read()
    assert sorted(got) == sorted(expected)
    assert sorted(got_after) == sorted(expected)  # the stalled one added nothing after
