"""Operating kcp for months: lag, metrics, periodic stats (against the real broker)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import KafkaException, Producer
from kcptest import KCP, json_lines, kcp_env, run_kcp

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(bootstrap: str, topic: str, count: int, partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, b'{"i": %d}' % i, timestamp=1_600_000_000_000 + i, **extra)
    producer.flush(10)


def test_lag_reports_exactly_what_a_group_left_unread(kafka_bootstrap, make_topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic(partitions=2)
    fill(kafka_bootstrap, topic, 10, partition=0)
    fill(kafka_bootstrap, topic, 4, partition=1)
    read = run_kcp(["consume", topic, "-g", "laggard", "-p", "0", "-c", "3"], env)
    assert read.returncode == 0, read.stderr
    result = run_kcp(["lag", "laggard", "--json"], env)
    assert result.returncode == 0, result.stderr
    (row,) = list(json_lines(result.stdout))
    assert (row["topic"], row["partition"], row["committed"], row["end"], row["lag"]) == (
        topic, 0, 3, 10, 7)
    # The oldest unread message (offset 3) was stamped 1600000000003 ms.
    assert abs(row["lag_seconds"] - (time.time() - 1_600_000_000.003)) < 60
    missing = run_kcp(["lag", "nobody-here"], env)
    assert missing.returncode == 4 and b"has committed no offsets" in missing.stderr


def test_metrics_endpoint_and_stats_lines(kafka_bootstrap, topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    fill(kafka_bootstrap, topic, 25)
    port = free_port()
    follower = subprocess.Popen([KCP, "consume", topic, "-f", "--metrics-port",
                                 f"127.0.0.1:{port}", "--stats-interval", "0.5"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        metrics = ""
        deadline = time.monotonic() + 30
        while "kcp_records_total 25.0" not in metrics and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    metrics = r.read().decode()
            except OSError:
                continue
        assert "kcp_records_total 25.0" in metrics
        assert "kcp_lag_messages 0.0" in metrics
        assert "kcp_errors_total 0.0" in metrics
        assert "kcp_last_message_age_seconds" in metrics
        time.sleep(1.5)  # at least one --stats-interval line
    finally:
        follower.terminate()
        assert follower.wait(20) == 0
    stats = [json.loads(line) for line in follower.stderr.read().splitlines()]
    assert stats and stats[-1]["records"] == 25 and stats[-1]["lag"] == 0


def test_mirror_follows_new_topics_with_keys_headers_and_partitions(kafka_bootstrap, make_topic,
                                                                     tmp_path):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    env = kcp_env(kafka_bootstrap, tmp_path)
    prefix = f"mir{int(time.time() * 1000) % 10**8}"
    first = make_topic(partitions=3, name=f"{prefix}_first")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(topic: str) -> None:
        for i in range(30):
            producer.produce(topic, b"v%d" % i, key=b"k%d" % i, partition=i % 3,
                             headers=[("h", b"%d" % i)], timestamp=1_600_000_000_000 + i)
        producer.flush(10)

    send(first)
    mirror = subprocess.Popen([KCP, "cp", "-f", f"{kafka_bootstrap}:^{prefix}_.*",
                               f"{kafka_bootstrap}:", "--rename", "copy_{topic}", "-g", "mirror"],
                              env=env, stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        second = make_topic(partitions=3, name=f"{prefix}_second")  # created while mirroring
        send(second)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for source in (first, second):
            copy = f"copy_{source}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # All topics: a metadata request naming the copy would auto-create it.
                known = admin.list_topics(timeout=5).topics.get(copy)
                if known is not None and known.error is None and len(known.partitions) == 3:
                    consumer = Consumer({"bootstrap.servers": kafka_bootstrap,
                                         "group.id": f"check-{copy}"})
                    try:
                        total = sum(consumer.get_watermark_offsets(TopicPartition(copy, p),
                                                                   timeout=5)[1]
                                    for p in range(3))
                    except KafkaException:  # just created: leaders still being elected
                        total = 0
                    consumer.close()
                    if total == 30:
                        break
                time.sleep(0.5)
            assert len(admin.list_topics(timeout=5).topics[copy].partitions) == 3
            consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "verify"})
            consumer.assign([TopicPartition(copy, p, 0) for p in range(3)])
            got = []
            while len(got) < 30:
                got += [m for m in consumer.consume(100, 5) if m.error() is None]
            consumer.close()
            assert sorted((m.partition(), m.key(), m.value(), m.headers(), m.timestamp()[1])
                          for m in got) == sorted(
                (i % 3, b"k%d" % i, b"v%d" % i, [("h", b"%d" % i)], 1_600_000_000_000 + i)
                for i in range(30))
    finally:
        mirror.terminate()
        assert mirror.wait(20) == 0, mirror.stderr.read()
