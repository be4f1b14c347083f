"""The test broker harness itself: a real broker round trip and a crash/restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

pytestmark = pytest.mark.kafka


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    # acks=all plus a full flush: the restart test relies on the broker having
    # appended the records before it is killed.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert not errors, errors


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g_{uuid.uuid4().hex[:10]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_produce_consume_auto_created_topic(kafka_bootstrap: str, topic: str) -> None:
    _produce(kafka_bootstrap, topic, [b"alert-1", b"alert-2"])
    assert _consume(kafka_bootstrap, topic, 2) == [b"alert-1", b"alert-2"]


def test_big_message_fits(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    name = make_topic(partitions=3)
    # Alerts with cutouts reach several MB; librdkafka's own 1 MB default is raised here.
    payload = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000_000})
    producer.produce(name, payload, partition=2)
    assert producer.flush(30) == 0
    assert _consume(kafka_bootstrap, name, 1) == [payload]


def test_kill_and_restart_keeps_messages(
    kafka_broker: Any, kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    if kafka_broker is None:
        pytest.skip("KCP_TEST_BOOTSTRAP names an external broker: cannot kill it")
    name = make_topic()
    _produce(kafka_bootstrap, name, [b"before-crash"])
    old_pid = kafka_broker.pid

    kafka_broker.kill()
    assert not kafka_broker.running
    kafka_broker.restart()

    assert kafka_broker.pid != old_pid
    assert kafka_broker.bootstrap == kafka_bootstrap
    assert _consume(kafka_bootstrap, name, 1) == [b"before-crash"]
