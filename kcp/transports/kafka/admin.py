"""Questions to a broker that are not a read or a write: its topics (ls, completion), a group's
lag (lag), and creating a mirror's topics."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from ...address import Address
from ...config import BrokerProfile, Config
from ...errors import TransportError
from ...options import Options
from .client import broker_profile, fatal_errors, topic_metadata

# How far before a partition's end ``kcp ls`` looks for its last record when the end is a
# transaction marker (the copy commits about once a second: a few markers at most).
_MARKER_SPAN = 64


def group_lag(address: Address, group: str, options: Options, config: Config
              ) -> list[dict[str, Any]]:
    """Per partition a group has committed: committed offset, end offset, lag in messages and
    in time (the age of the oldest unread message, in seconds)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    profile = broker_profile(address, options, config)
    name, properties = profile.name, profile.properties
    group = profile.group_id(group)
    callbacks, errors = fatal_errors(name)
    admin = AdminClient({**properties, **callbacks})
    topic_metadata(admin, name, None, options.timeout, errors)
    try:
        request = [ConsumerGroupTopicPartitions(group)]
        answer = admin.list_consumer_group_offsets(request, request_timeout=options.timeout)
        committed = answer[group].result().topic_partitions
    except KafkaException as exc:
        raise TransportError(f"group {group} on broker {name}: {exc.args[0].str()}") from None
    if not committed:
        raise TransportError(f"group {group} has committed no offsets on broker {name}")
    consumer = _position_reader("kcp-lag", profile, callbacks)
    try:
        rows, unread = [], []
        for tp in sorted(committed, key=lambda tp: (tp.topic, tp.partition)):
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                       timeout=options.timeout)
            position = tp.offset if tp.offset >= 0 else low
            rows.append({"topic": tp.topic, "partition": tp.partition,
                         "committed": tp.offset if tp.offset >= 0 else None, "end": high,
                         "lag": max(0, high - max(position, low)), "lag_seconds": 0.0})
            if high > max(position, low):
                unread.append(TopicPartition(tp.topic, tp.partition, max(position, low)))
        stamps, empty = timestamps_at(consumer, unread, options.timeout)
        now = time.time()
        for row in rows:
            key = (row["topic"], row["partition"])
            if key in empty:
                # Only transaction markers or aborted records are left: nothing to read.
                row["lag"] = 0
            elif row["lag"]:
                stamp = stamps.get(key)
                row["lag_seconds"] = round(now - stamp / 1000, 3) if stamp else None
        return rows
    finally:
        consumer.close()


def topic_names(address: Address, options: Options, config: Config) -> list[str]:
    """The topic names of a broker, internal ones left out (shell completion)."""
    profile = broker_profile(address, options, config)
    name, properties = profile.name, profile.properties
    callbacks, errors = fatal_errors(name)
    consumer = Consumer({"group.id": profile.group_id("kcp-completion"), **properties,
                         **callbacks})
    try:
        metadata = topic_metadata(consumer, name, None, options.timeout, errors)
        return sorted(t for t in metadata.topics if not t.startswith("__"))
    finally:
        consumer.close()


def describe_topics(address: Address, options: Options, config: Config) -> list[dict[str, Any]]:
    """Each topic of a broker (matching the address's topics or patterns, if any): partitions,
    message count (the span of offsets), and the timestamps of its first and last messages."""
    profile = broker_profile(address, options, config)
    name = profile.name
    callbacks, errors = fatal_errors(name)
    consumer = _position_reader("kcp-ls", profile, callbacks)
    try:
        metadata = topic_metadata(consumer, name, None, options.timeout, errors)
        patterns = [re.compile(t if t.startswith("^") else f"^{re.escape(t)}$")
                    for t in address.topics]
        topics = sorted(t for t in metadata.topics if not t.startswith("__")
                        and (not patterns or any(p.match(t) for p in patterns)))
        rows = []
        firsts: list[TopicPartition] = []
        lasts: list[TopicPartition] = []
        for topic in topics:
            count = 0
            for partition in sorted(metadata.topics[topic].partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=options.timeout)
                count += high - low
                if high > low:
                    firsts.append(TopicPartition(topic, partition, low))
                    lasts.append(TopicPartition(topic, partition, high - 1))
            rows.append({"topic": topic, "partitions": len(metadata.topics[topic].partitions),
                         "messages": count, "exact": True, "first": None, "last": None})
        by_topic = {row["topic"]: row for row in rows}
        firsts_found, _ = timestamps_at(consumer, firsts, options.timeout)
        lasts_found, marked = timestamps_at(consumer, lasts, options.timeout)
        # A partition written in transactions ends with a commit marker, not a record: its
        # offsets count markers (and aborted records) too, and its last record lies before.
        earlier = [TopicPartition(tp.topic, tp.partition, max(0, tp.offset - _MARKER_SPAN))
                   for tp in lasts if (tp.topic, tp.partition) in marked]
        lasts_found.update(timestamps_at(consumer, earlier, options.timeout, latest=True)[0])
        for topic, _ in marked:
            by_topic[topic]["exact"] = False
        for field, found, pick in (("first", firsts_found, min), ("last", lasts_found, max)):
            for (topic, _), stamp in found.items():
                row = by_topic[topic]
                row[field] = stamp if row[field] is None else pick(row[field], stamp)
        return rows
    finally:
        consumer.close()


def _position_reader(purpose: str, profile: BrokerProfile, callbacks: dict) -> Consumer:
    """A consumer that reads a record here and there, committed records only."""
    return Consumer({"group.id": profile.group_id(f"{purpose}-{uuid.uuid4().hex}"),
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "enable.partition.eof": True, **profile.properties, **callbacks})


def timestamps_at(consumer: Consumer, positions: list[TopicPartition], timeout: float,
                  latest: bool = False) -> tuple[dict[tuple[str, int], int],
                                                 set[tuple[str, int]]]:
    """The timestamp of the first committed record at or after each position (``latest``: of
    the last one up to the end), and the partitions that have none there (only transaction
    markers or aborted records; or compacted away)."""
    if not positions:
        return {}, set()
    consumer.assign(positions)
    wanted = {(tp.topic, tp.partition) for tp in positions}
    found: dict[tuple[str, int], int] = {}
    ended: set[tuple[str, int]] = set()
    deadline = time.monotonic() + min(timeout, 10.0)
    while wanted - ended - (set() if latest else found.keys()) and (
            time.monotonic() < deadline):
        for record in consumer.consume(500, 0.2):
            key = (record.topic(), record.partition())
            if key not in wanted or key in ended:
                continue
            if record.error() is not None:
                if record.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(key)
                    consumer.pause([TopicPartition(*key)])
            elif latest or key not in found:
                found[key] = record.timestamp()[1]
                if not latest:
                    consumer.pause([TopicPartition(*key)])
    # Paused partitions stay paused across assign(): undo it for the next round.
    consumer.resume([TopicPartition(t, p) for t, p in wanted])
    consumer.unassign()
    return found, ended - found.keys()


def create_topic_like(producer: Producer, properties: dict, name: str, topic: str,
                      partitions: int, timeout: float) -> None:
    """Create ``topic`` on broker ``name`` with ``partitions`` (-1: the broker's default),
    unless it exists, and wait until ``producer`` knows a leader for each partition."""
    from confluent_kafka.admin import AdminClient, NewTopic

    # All topics, not this one: asking for it by name would auto-create it (1 partition).
    if topic in producer.list_topics(timeout=timeout).topics:
        return
    admin = AdminClient(properties)
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions)],
                                 operation_timeout=timeout)[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise TransportError(f"cannot create topic {topic} on broker {name}: "
                                 f"{exc.args[0].str()}") from None
    # Records are sent to explicit partitions: wait until the producer knows them all.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        known = producer.list_topics(topic, timeout=timeout).topics.get(topic)
        if known is not None and known.error is None and known.partitions and all(
                p.leader >= 0 for p in known.partitions.values()) and (
                partitions < 0 or len(known.partitions) == partitions):
            return
        time.sleep(0.1)
    raise TransportError(f"topic {topic} on broker {name} was created but has no leaders "
                         f"after {timeout:g}s")
