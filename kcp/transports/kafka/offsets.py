"""Exactly once between Kafka clusters: the source positions live in the destination cluster.

A copy with ``--exactly-once`` writes, inside each producer transaction of the destination,
the records it copied *and* where it is in each source partition: one record per partition in
the compacted topic ``__kcp_offsets`` of the destination (key: group, source topic, partition;
value: the next source offset to copy). The transaction commits both or neither, so a
``read_committed`` reader of the destination sees a record exactly when the position past it is
visible. When partitions are assigned (at start, after a rebalance, when a followed pattern
gains a topic), the copier reads its positions back from that topic and seeks there; the source
group only shares the partitions out among copiers. This is how MirrorMaker 2 and Kafka
Connect's exactly-once source tasks (KIP-618) do it; the source cluster's transactions are not
involved, so source and destination may be different clusters (or the same one).

Fencing: the producer's ``transactional.id`` is derived from the group, the destination and
the set of source partitions this copier was assigned. A copier restarted after a crash (or a
member that takes over a stalled one's partitions) gets the same id: initialising it aborts the
old transaction and fences the old producer, whose next commit fails. Before reading positions
the copier waits until every transaction open on the offsets topic at that moment has ended
(committed or aborted; at most the transaction timeout, ``--timeout``), so positions written by
a copier with another id (a different partition set) are seen too.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ...errors import TransportError
from .client import LOG

OFFSETS_TOPIC = "__kcp_offsets"
# Compacted: only the latest position of each key is kept. Small segments, so that the cleaner
# (which never touches the active segment) keeps the topic, read at every assignment, short.
_OFFSETS_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "600000",
                         "segment.bytes": "16777216", "min.cleanable.dirty.ratio": "0.1"}
_OFFSETS_PARTITIONS = 1

def transactional_id(group: str, destination: str,
                     partitions: list[tuple[str, int]]) -> str:
    """The same id for the same group, destination and source partitions, whoever runs it."""
    digest = hashlib.sha256(orjson.dumps([destination, sorted(partitions)])).hexdigest()[:16]
    return f"kcp-{group}-{digest}"


def position_record(group: str, topic: str, partition: int, offset: int
                    ) -> tuple[bytes, bytes]:
    """The key and value of one position in the offsets topic."""
    return (orjson.dumps({"group": group, "topic": topic, "partition": partition}),
            orjson.dumps({"offset": offset}))


class PositionStore:
    """Reads and writes the source positions of a group in the destination's offsets topic."""

    def __init__(self, name: str, properties: dict[str, Any], group: str,
                 timeout: float) -> None:
        self.name = name
        self.properties = properties
        self.group = group
        self.timeout = timeout

    def create_topic(self) -> None:
        """Create the offsets topic on the destination unless it exists."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({**self.properties, "logger": LOG})
        try:
            if OFFSETS_TOPIC in admin.list_topics(timeout=self.timeout).topics:
                return
            wanted = NewTopic(OFFSETS_TOPIC, num_partitions=_OFFSETS_PARTITIONS,
                              config=_OFFSETS_TOPIC_CONFIG)
            admin.create_topics([wanted], operation_timeout=self.timeout
                                )[OFFSETS_TOPIC].result(timeout=self.timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransportError(f"cannot create the offsets topic {OFFSETS_TOPIC} on "
                                     f"broker {self.name} (--exactly-once keeps the source "
                                     f"positions there): {exc.args[0].str()}") from None
        # Read at once: wait until its partitions have leaders.
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            known = admin.list_topics(OFFSETS_TOPIC, timeout=self.timeout).topics.get(
                OFFSETS_TOPIC)
            if known is not None and known.error is None and known.partitions and all(
                    p.leader >= 0 for p in known.partitions.values()):
                return
            time.sleep(0.1)

    def read(self) -> dict[tuple[str, int], int]:
        """The group's committed positions, once every transaction open now has ended."""
        settings = {**self.properties, "group.id": f"kcp-positions-{self.group}",
                    "enable.auto.commit": False, "isolation.level": "read_committed",
                    "logger": LOG}
        plain = Consumer({**settings, "isolation.level": "read_uncommitted"})
        committed = Consumer(settings)
        try:
            partitions = [TopicPartition(OFFSETS_TOPIC, p) for p in range(_OFFSETS_PARTITIONS)]
            # The end of what was written, committed or not: reading (read_committed) up to
            # there means waiting for each open transaction to commit or abort.
            ends = {tp.partition: plain.get_watermark_offsets(tp, timeout=self.timeout)[1]
                    for tp in partitions}
            committed.assign([TopicPartition(OFFSETS_TOPIC, p, OFFSET_BEGINNING)
                              for p in ends])
            return self._read_until(committed, ends)
        except KafkaException as exc:
            raise TransportError(f"cannot read the offsets topic {OFFSETS_TOPIC} on broker "
                                 f"{self.name}: {exc.args[0].str()}") from None
        finally:
            plain.close()
            committed.close()

    def _read_until(self, consumer: Consumer, ends: dict[int, int]
                    ) -> dict[tuple[str, int], int]:
        positions: dict[tuple[str, int], int] = {}
        # The transaction timeout bounds how long a dead copier's transaction stays open.
        deadline = time.monotonic() + self.timeout + 10
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            if time.monotonic() > deadline:
                raise TransportError(
                    f"broker {self.name}: a transaction on {OFFSETS_TOPIC} stayed open for "
                    f"{self.timeout + 10:g}s; is another kcp with group {self.group} copying "
                    "there?")
            for record in consumer.consume(500, 0.2):
                if record.error() is not None:
                    continue
                key = orjson.loads(record.key())
                if key.get("group") == self.group:
                    value = orjson.loads(record.value())
                    positions[(key["topic"], key["partition"])] = value["offset"]
            for tp in consumer.position([TopicPartition(OFFSETS_TOPIC, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return positions
