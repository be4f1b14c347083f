"""``--heartbeat TOPIC``: a topic the broker writes to steadily (GCN's ``gcn.heartbeat``, every
second). When it falls silent for longer than the limit the stream is dead although the
connection looks alive, and the read ends with a transport error (exit 4).

Beats are timed when they arrive, not by their timestamps: a producer's clock may be off.
librdkafka fetches them in the background, so a reader busy writing sees no false silence.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from ...config import BrokerProfile
from ...errors import TransportError
from .client import absent_topic, explain, fatal_errors, raise_fatal, topic_metadata


class Heartbeat:
    """Watches ``topic`` of a broker from its end; :meth:`check` raises once it is silent."""

    def __init__(self, profile: BrokerProfile, topic: str, limit: float, timeout: float
                 ) -> None:
        self.topic, self.limit, self.name = topic, limit, profile.name
        callbacks, self._errors = fatal_errors(profile.name, group=False)
        group = profile.group_id(f"kcp-heartbeat-{uuid.uuid4().hex}")
        self.consumer = Consumer({"group.id": group, "enable.auto.commit": False,
                                  **profile.properties, **callbacks})
        found = topic_metadata(self.consumer, self.name, topic, timeout, self._errors
                               ).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TransportError(absent_topic(self.consumer, self.name, topic, timeout))
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in found.partitions])
        self.last_beat = time.monotonic()  # the start counts as one

    def check(self) -> None:
        try:
            beats = self.consumer.consume(100, 0)
        except KafkaException as exc:
            raise TransportError(explain(self.name, exc.args[0], self.topic)) from None
        raise_fatal(self.name, self._errors, self.topic)
        if any(beat.error() is None for beat in beats):
            self.last_beat = time.monotonic()
        silent = time.monotonic() - self.last_beat
        if silent > self.limit:
            raise TransportError(f"heartbeat topic {self.topic} on broker {self.name} silent for "
                                 f"{silent:.0f}s (--heartbeat-timeout {self.limit:g})")

    def close(self) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
