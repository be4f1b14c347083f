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
