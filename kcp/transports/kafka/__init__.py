"""Kafka topics, read with a confluent-kafka Consumer and written with a Producer.

Reading: without a group, partitions are assigned directly at the requested offsets (no group
coordinator, no rebalance, fast start); with ``-g GROUP`` the group's committed offsets are used
and handled records are committed at each checkpoint, never before the sink holds them.
"End of topic" is the high watermark each partition had when it was assigned, or the partition
EOF event, whichever comes first, so ``consume`` ends even on a busy topic.

Writing: acks=all with idempotence; the producer's queue is bounded, so a slow broker slows the
reader (back-pressure); ``flush`` waits for every delivery report and fails naming the failures.
With ``--exactly-once`` the sink writes in transactions that also carry the source positions,
kept in the destination cluster (``CopyTransaction``; offsets.py tells how and why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from ...address import Address, parse_offset
from ...codec import RegistryClient
from ...config import Config
from ...contracts import SinkTraits, Source
from ...errors import TransportError, UsageError
from ...formats import payload_encoder
from ...message import Message
from ...options import Options
from ...times import parse_time
from .admin import create_topic_like, describe_topics, group_lag, topic_names
from .client import (
    ABORTED,
    ACCESS_DENIED,
    CLIENT_FAILURES,
    NO_SUCH_TOPIC,
    absent_topic,
    broker_profile,
    explain,
    fatal_errors,
    is_fenced,
    raise_fatal,
    raised_error,
    refused_topic,
    topic_metadata,
    transaction_failure,
)
from .heartbeat import Heartbeat
from .offsets import OFFSETS_TOPIC, PositionStore, position_record, transactional_id

__all__ = ["KafkaSink", "KafkaSource", "describe_topics", "exactly_once", "group_lag",
           "open_sink", "open_source", "start_group", "topic_names"]

BATCH = 500
_NAMED_OFFSETS = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}


class KafkaSource:
    """Reads the records of one or several topics (names or ^patterns) of one broker."""

    bytes_read = 0  # the records' payloads are counted as they pass

    def __init__(self, address: Address, options: Options, config: Config) -> None:
        if not address.topics:
            raise UsageError(f"{address}: name a topic to read (NAME:topic)")
        self.address = address
        self.options = options
        profile = broker_profile(address, options, config)
        self.name, properties = profile.name, profile.properties
        given = options.group or address.group
        self.group = profile.group_id(given) if given else None
        if profile.registry:
            options.schemas.add_id_resolver(RegistryClient(profile.registry))
        # --since starts reading where the window starts instead of filtering from the beginning
        self.offset = options.offset or (f"@{parse_time(options.since)}" if options.since
                                         else options.default_offset)
        self.stop_at_end = not options.follow
        # Following ^patterns: topics that appear later are read too (a mirror, an archiver).
        self.watches_patterns = options.follow and any(t.startswith("^") for t in address.topics)
        callbacks, self._errors = fatal_errors(self.name, group=bool(self.group)
                                                or self.watches_patterns)
        settings = {
            "group.id": self.group or profile.group_id(f"kcp-{uuid.uuid4().hex}"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest" if self.offset == "beginning" else "latest",
            # librdkafka prefetches ~64 MB per partition by default; alerts are big, keep RSS flat.
            "queued.max.messages.kbytes": 65536,
            # With the queue capped, librdkafka waits this long before fetching again once it
            # is full: its 1 s default stalls a fast reader for a second at a time.
            "fetch.queue.backoff.ms": 10,
            # A member that died (kill -9) holds its partitions for the session timeout:
            # 45 s by default, too long for a rerun from a shell.
            "session.timeout.ms": 10000,
            # How soon a new topic matching a followed pattern is noticed (default 5 min).
            "topic.metadata.refresh.interval.ms": 10000 if self.watches_patterns else 300000,
            "fetch.max.bytes": 52428800,
            **properties,
            **callbacks,
        }
        self._settings = settings
        try:
            self.consumer = Consumer(settings)
        except KafkaException as exc:
            raise UsageError(f"bad Kafka setting: {exc.args[0].str()}") from None
        self.stop_offsets: dict[tuple[str, int], int] = {}
        self.start_offsets: dict[tuple[str, int], int] = {}  # of a read assigned explicitly
        self.done: set[tuple[str, int]] = set()
        self.assigned: set[tuple[str, int]] = set()
        self.positions: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self._callback_failure: Exception | None = None
        self.transaction: CopyTransaction | None = None
        # Set by the pipeline: makes the sink durable before a rebalance commits.
        self.flush_sink: Any = None
        self._assignment_seen = False
        self._lag = 0
        self._lag_due = 0.0
        self._subscribe()
        self.heartbeat = (Heartbeat(profile, options.heartbeat, options.heartbeat_timeout,
                                    options.timeout) if options.heartbeat else None)

    # -- assignment ---------------------------------------------------------------------------
    def _topics(self) -> list[str]:
        metadata = topic_metadata(self.consumer, self.name, None, self.options.timeout,
                                  self._errors)
        names = []
        waited = set()
        for wanted in self.address.topics:
            if wanted.startswith("^"):
                pattern = re.compile(wanted)
                names += sorted(t for t in metadata.topics if pattern.match(t)
                                and not t.startswith("__"))
            elif wanted in metadata.topics and metadata.topics[wanted].error is None:
                names.append(wanted)
            elif self.options.follow and refused_topic(self.consumer, self.name, wanted,
                                                       self.options.timeout) is None:
                metadata = self._wait_for(wanted)
                names.append(wanted)
                waited.add(wanted)
            else:
                raise TransportError(absent_topic(self.consumer, self.name, wanted,
                                                  self.options.timeout, metadata.topics))
        if not names and not self.watches_patterns:
            raise TransportError(f"no topic on broker {self.name} matches "
                                 f"{', '.join(self.address.topics)}")
        self._metadata = metadata
        # A topic made while kcp waited is new to it, like one matching a followed pattern
        # later: read from its first record (or the group's position), whatever -o/-n say.
        self._topics_at_start = set(metadata.topics) - waited
        return names

    def _wait_for(self, topic: str) -> Any:
        """The broker's metadata once ``topic`` exists (said once on stderr; Ctrl-C stops)."""
        print(f"kcp: waiting for topic {topic} to be created on broker {self.name} (Ctrl-C "
              "to stop)", file=self.options.environment.stderr, flush=True)
        while True:
            time.sleep(0.5)
            metadata = topic_metadata(self.consumer, self.name, None, self.options.timeout,
                                      self._errors)
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return metadata

    def _subscribe(self) -> None:
        topics = self._topics()
        if self.group or self.watches_patterns:
            # A subscription to the patterns themselves picks up topics created later.
            wanted = list(self.address.topics) if self.watches_patterns else topics
            self.consumer.subscribe(wanted, on_assign=self._deferring(self._on_assign),
                                    on_revoke=self._deferring(self._on_revoke),
                                    on_lost=self._deferring(self._on_lost))
            return
        partitions = []
        for topic in topics:
            ids = sorted(self._metadata.topics[topic].partitions)
            if self.options.partitions:
                missing = set(self.options.partitions) - set(ids)
                if missing:
                    raise UsageError(f"topic {topic} has no partition {sorted(missing)[0]} "
                                     f"(it has {len(ids)})")
                ids = [p for p in ids if p in self.options.partitions]
            partitions += [TopicPartition(topic, p) for p in ids]
        if self.options.share is not None:
            index, count = self.options.share
            partitions = partitions[index::count]
        self._place(partitions, explicit=True)
        self.consumer.assign(partitions)
        self._assignment_seen = True
        self.starts = partitions

    def _position(self, partitions: list[TopicPartition], explicit: bool) -> None:
        """Set each partition's start offset and remember where its end is now."""
        kind, value = parse_offset(self.offset)
        if kind == "named":
            kind, value = "absolute", _NAMED_OFFSETS[value]
        if self.options.tail_count is not None:
            kind, value = "from_end", self.options.tail_count
        timeout = self.options.timeout
        for tp in partitions:
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
            except KafkaException as exc:
                raise TransportError(f"{tp.topic}[{tp.partition}]: cannot read offsets: "
                                     f"{exc.args[0].str()}") from None
            key = (tp.topic, tp.partition)
            self.stop_offsets[key] = high
            if explicit:
                if kind == "from_end":
                    tp.offset = max(low, high - value)
                elif kind == "absolute":
                    tp.offset = value
                self.start_offsets[key] = (low if tp.offset == OFFSET_BEGINNING else high
                                           if tp.offset == OFFSET_END else tp.offset)
            if high <= low or (explicit and kind == "from_end" and value == 0) or (
                    explicit and kind == "absolute" and value == OFFSET_END):
                self.done.add(key)
        if explicit and kind == "time":
            for tp in partitions:
                tp.offset = value
            found = self.consumer.offsets_for_times(partitions, timeout=timeout)
            for tp, result in zip(partitions, found, strict=True):
                key = (tp.topic, tp.partition)
                tp.offset = result.offset if result.offset >= 0 else OFFSET_END
                self.start_offsets[key] = max(tp.offset, 0)
                if tp.offset == OFFSET_END:
                    self.done.add(key)
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)

    def _deferring(self, handler: Callable[[Consumer, list[TopicPartition]], None]
                   ) -> Callable[[Consumer, list[TopicPartition]], None]:
        """``handler`` as a rebalance callback whose exception waits for the client call that
        ran it (poll, close) to return: an exception left set inside the client breaks the next
        Python callback it runs (a SystemError in error_cb instead of "fenced")."""
        def deferred(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if self._callback_failure is None:
                try:
                    handler(consumer, partitions)
                except Exception as exc:  # re-raised by _raise_callback_failure
                    self._callback_failure = exc
        return deferred

    def _raise_callback_failure(self) -> None:
        failure, self._callback_failure = self._callback_failure, None
        if failure is not None:
            raise failure

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.options.partitions:
            partitions = [tp for tp in partitions if tp.partition in self.options.partitions]
        explicit = not self.group or self.options.offset is not None or (
            self.options.tail_count is not None)
        self._place(partitions, explicit)
        if self.transaction is not None:
            self.transaction.assign(partitions, resume=not explicit)
        consumer.assign(partitions)
        self._assignment_seen = True

    def _place(self, partitions: list[TopicPartition], explicit: bool) -> None:
        """Start ``partitions``: -o, -n and the tail's "end" place a reader in the topics there
        were when it started; a topic created since is new to it: read from its first record."""
        created = [tp for tp in partitions if tp.topic not in self._topics_at_start]
        self._position([tp for tp in partitions if tp.topic in self._topics_at_start],
                       explicit=explicit)
        self._position(created, explicit=False)
        for tp, committed in zip(created, self._committed(created), strict=True):
            tp.offset = committed if committed >= 0 else OFFSET_BEGINNING

    def _committed(self, partitions: list[TopicPartition]) -> list[int]:
        """The group's committed offset of each partition (negative: none, or no group)."""
        if not self.group or not partitions:
            return [OFFSET_INVALID] * len(partitions)
        try:
            found = self.consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=self.options.timeout)
        except KafkaException as exc:
            raise TransportError(f"group {self.group}: cannot read committed offsets: "
                                 f"{exc.args[0].str()}") from None
        return [tp.offset for tp in found]

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What was handled is committed while the partitions are still ours, and only once the
        # sink holds it durably (the pipeline's checkpoint order, applied here too).
        if self.flush_sink is not None:
            self.flush_sink()
        self.checkpoint()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions another member now owns: no commit for them from here (it would
        overwrite the new owner's progress)."""
        if self.transaction is not None:
            # Records of a lost partition written since the last commit must never be
            # committed: the new owner copies them again from the committed position.
            self.transaction.abort()
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """No position and no "end" for ``partitions`` until the next assignment (an empty
        assignment during a rebalance is not the end of the topic)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assigned.discard(key)
            self.done.discard(key)
            self.positions.pop(key, None)
            self.committed.pop(key, None)
        self._assignment_seen = False

    # -- reading ------------------------------------------------------------------------------
    def finished(self) -> bool:
        return self.stop_at_end and self._assignment_seen and self.assigned <= self.done

    def __iter__(self) -> Iterator[Message]:
        poll = self.consumer.poll
        consume = self.consumer.consume
        stop_offsets = self.stop_offsets
        done = self.done
        topics = ", ".join(self.address.topics)  # for error messages
        while not self.finished():
            try:
                # Wait for the first record only, then take what is already queued: waiting
                # for a full batch would hold a lone new alert back (tail latency).
                first = poll(0.2)
                batch = [first, *consume(BATCH - 1, 0)] if first is not None else []
            except CLIENT_FAILURES as exc:  # a fatal consumer error
                raise TransportError(explain(self.name, raised_error(exc), None, self.group)
                                     ) from None
            self._raise_callback_failure()
            raise_fatal(self.name, self._errors, topics, self.group)
            self._refresh_lag()
            if self.heartbeat is not None:
                self.heartbeat.check()
            if not batch:
                yield None
            for record in batch:
                error = record.error()
                topic, partition = record.topic(), record.partition()
                if error is not None:
                    self._handle(error, topic, partition)
                    continue
                offset = record.offset()
                key = (topic, partition)
                reached_end = (self.stop_at_end
                               and offset >= stop_offsets.get(key, sys.maxsize) - 1)
                if reached_end:
                    done.add(key)
                yield Message(value=record.value(), key=record.key(), headers=record.headers(),
                              topic=topic, partition=partition, offset=offset,
                              timestamp=record.timestamp()[1])
                # Only a partition reaching its end can finish the read.
                if reached_end and self.finished():
                    return
            yield None

    def _handle(self, error: KafkaError, topic: str | None, partition: int | None) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            self.done.add((topic, partition))
        elif code in NO_SUCH_TOPIC:
            raise TransportError(f"no such topic {topic!r} on broker {self.name}")
        elif code == KafkaError.GROUP_AUTHORIZATION_FAILED and not (
                self.group or self.watches_patterns):
            pass  # the throw-away group of a reader without -g (see fatal_errors)
        elif code in ACCESS_DENIED or error.fatal():
            raise TransportError(explain(self.name, error, topic, self.group))
        # Anything else (a broker restarting, a leader moving) librdkafka retries by itself.

    # -- progress -----------------------------------------------------------------------------
    def lag(self) -> int:
        """Messages of the assigned partitions not read yet, as of at most a second ago.

        Safe from any thread: the client serialises calls on a consumer, so a call from the
        metrics thread would wait for the main thread's poll; the main thread refreshes it.
        """
        return self._lag

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + 1.0
        behind = 0
        for topic, partition in self.assigned:
            with contextlib.suppress(KafkaException):
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                              cached=True)
                position = self.positions.get((topic, partition))
                if high >= 0 and position is not None:
                    behind += max(0, high - position)
        self._lag = behind

    @property
    def commits(self) -> bool:
        """Whether checkpoints commit positions (a group, or a transaction)."""
        return bool(self.group)

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        self.flush_sink = flush

    def done_fraction(self) -> float | None:
        """The offsets read of a read that stops at the end, from the start positions to the
        end offsets of the start; None when following or the start positions are a group's."""
        if not self.stop_at_end or not self.stop_offsets:
            return None
        total = read = 0
        for key, stop in self.stop_offsets.items():
            start = self.start_offsets.get(key)
            if start is None:
                return None
            reached = stop if key in self.done else self.positions.get(key, start)
            total += max(0, stop - start)
            read += max(0, min(reached, stop) - start)
        return read / total if total else None

    def partition_count(self, topic: str) -> int:
        """How many partitions a source topic has (a mirror creates its copy alike)."""
        metadata = topic_metadata(self.consumer, self.name, topic, self.options.timeout,
                                  self._errors)
        return len(metadata.topics[topic].partitions)

    def ack(self, message: Message) -> None:
        # A partition given up since (a -j consumer process acknowledges late) is no longer
        # ours to commit: its new owner reads on from the last commit.
        if message.topic is not None and (message.topic, message.partition) in self.assigned:
            self.positions[(message.topic, message.partition)] = message.offset + 1

    def checkpoint(self) -> None:
        if not self.group:
            return
        pending = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()
                   if self.committed.get((t, p)) != o]
        if self.transaction is not None:
            # Exactly once: the positions travel inside the destination's transaction; the
            # source group then gets them too, for `kcp lag` only (best effort, asynchronous).
            self.transaction.commit(pending)
            if pending:
                self._commit(pending, asynchronous=True)
        elif not pending:
            return
        else:
            self._commit(pending)
        self.committed.update(((tp.topic, tp.partition), tp.offset) for tp in pending)

    def _commit(self, pending: list[TopicPartition], asynchronous: bool = False) -> None:
        try:
            self.consumer.commit(offsets=pending, asynchronous=asynchronous)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError._NO_OFFSET and not asynchronous:
                raise TransportError(f"group {self.group}: cannot commit offsets: "
                                     f"{error.str()}") from None

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.close()
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self._raise_callback_failure()


class KafkaSink:
    """Writes payloads to one topic (or to each message's own topic when none is named)."""

    traits = SinkTraits(payloads=True, encodes_alone=True)

    def __init__(self, address: Address, options: Options, config: Config) -> None:
        keep_partition, rename = options.keep_partition, options.rename
        transactional = options.exactly_once
        if len(address.topics) > 1 or any(t.startswith("^") for t in address.topics):
            raise UsageError(f"{address}: write to one topic name, not a list or a pattern")
        self.topic = address.topics[0] if address.topics else None
        self.encode = payload_encoder(options)
        # A destination broker with no topic mirrors: each record keeps its topic (renamed by
        # the template) and its partition, and missing topics are created like their source.
        self.keep_partition = keep_partition or self.topic is None
        self.rename = rename
        if rename is not None and ("{topic}" not in rename or self.topic is not None):
            raise UsageError("--rename needs a destination broker without a topic and a "
                             "template holding {topic}, e.g. 'mirror_{topic}'")
        self.partitions_of: Any = None
        self._ready_topics: set[str] = set()
        # kcp produce -k KEY -H NAME=VALUE -p N: the same for every message sent
        self.key, self.headers = options.message_key, list(options.message_headers)
        self.partition = options.to_partition
        profile = broker_profile(address, options, config)
        self.name, properties = profile.name, profile.properties
        self._properties = dict(properties)
        callbacks, self._errors = fatal_errors(self.name)
        settings = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": int(options.timeout * 1000),
            # Bounded queue: when the broker lags, produce() blocks us instead of growing memory.
            "queue.buffering.max.kbytes": 262144,
            "queue.buffering.max.messages": 20000,
            # Rubin alerts with full histories pass 1 MB, librdkafka's default limit.
            "message.max.bytes": 10485760,
            **properties,
            **callbacks,
        }
        # Transactional producers are made when source partitions are assigned (their
        # transactional.id names the partitions: see use_transactional_id).
        self._settings = settings
        try:
            self.producer = Producer(settings)
        except KafkaException as exc:
            raise UsageError(f"bad Kafka setting: {exc.args[0].str()}") from None
        metadata = topic_metadata(self.producer, self.name, self.topic, options.timeout,
                             self._errors)
        found = metadata.topics.get(self.topic) if self.topic else None
        if found is not None and found.error is not None and (
                found.error.code() in ACCESS_DENIED):  # before idempotence is refused too
            raise TransportError(explain(self.name, found.error, self.topic))
        self.failures: list[tuple[str, str]] = []
        self.timeout = options.timeout
        self.transactional = transactional
        self.group = options.group
        self.transactional_id: str | None = None
        self._in_transaction = False

    def use_transactional_id(self, transactional_id: str) -> None:
        """Produce from now on with ``transactional_id``. Initialising it aborts the open
        transaction of any earlier producer with that id and fences that producer."""
        if transactional_id == self.transactional_id:
            return
        if self._in_transaction:
            raise RuntimeError("the transactional id changed inside a transaction")
        self.flush()
        producer = Producer({**self._settings, "transactional.id": transactional_id,
                             "transaction.timeout.ms": int(self.timeout * 1000)})
        self.producer = producer
        self.transactional_id = transactional_id
        self._transaction_call("initialise", producer.init_transactions)

    def _transaction_call(self, what: str, call: Any, *args: Any) -> None:
        try:
            call(*args, self.timeout)
        except CLIENT_FAILURES as exc:
            error = raised_error(exc)
            if error.txn_requires_abort():
                self.abort_transaction()
            raise TransportError(transaction_failure(self.name, what, error, self.group)
                                 ) from None

    def commit_transaction(self, positions: list[tuple[bytes, bytes]]) -> None:
        """Commit what was produced since the last call together with ``positions`` (records
        of the offsets topic: key, value)."""
        if not self._in_transaction and not positions:
            return
        if not self._in_transaction:
            self._begin()
        for key, value in positions:
            self._produce(OFFSETS_TOPIC, value, key, {})
        self._transaction_call("commit", self.producer.commit_transaction)
        self._in_transaction = False

    def abort_transaction(self) -> None:
        """Drop what was produced since the last commit (nothing if no transaction is open)."""
        if self._in_transaction:
            self._in_transaction = False
            try:
                self.producer.abort_transaction(self.timeout)
            except CLIENT_FAILURES as exc:
                error = raised_error(exc)
                if is_fenced(error):  # another copier has taken over: stop here
                    raise TransportError(explain(self.name, error, None, self.group)) from None
        self.failures.clear()

    def _begin(self) -> None:
        if self.transactional_id is None:
            raise RuntimeError("a transactional sink writes only once partitions are assigned")
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise TransportError(transaction_failure(self.name, "begin", exc.args[0],
                                                     self.group)) from None
        self._in_transaction = True

    def _on_delivery(self, error: KafkaError | None, record: Any) -> None:
        if error is None or error.code() in ABORTED:
            return  # delivered, or in a transaction that was aborted: the copy writes it again
        if is_fenced(error):
            self._errors.append(error)  # reported alone by flush: nothing else matters then
        else:
            reason = (explain(self.name, error, record.topic()) if error.code() in ACCESS_DENIED
                      else error.str())
            self.failures.append((f"{record.topic()}", reason))

    def write(self, message: Message) -> None:
        self.write_encoded(message, self.encode(message))

    def copies_from(self, source: Source) -> None:
        self.partitions_of = source.partition_count  # a mirror copies partition counts

    def _destination(self, message: Message) -> str:
        if self.topic is not None:
            return self.topic
        if message.topic is None:
            raise UsageError("no destination topic: name one (NAME:topic)")
        topic = self.rename.format(topic=message.topic) if self.rename else message.topic
        if topic not in self._ready_topics:
            self._create_like(topic, message.topic)
            self._ready_topics.add(topic)
        return topic

    def _create_like(self, topic: str, source_topic: str) -> None:
        """Create ``topic`` with as many partitions as its source, unless it exists."""
        partitions = self.partitions_of(source_topic) if self.partitions_of else -1
        create_topic_like(self.producer, self._properties, self.name, topic, partitions,
                          self.timeout)

    def write_encoded(self, message: Message, value: bytes) -> None:
        topic = self._destination(message)
        if self.transactional and not self._in_transaction:
            self._begin()
        headers = [*(message.headers or ()), *self.headers] if self.headers else message.headers
        extra: dict[str, Any] = {"headers": headers, "on_delivery": self._on_delivery}
        if self.partition is not None:
            extra["partition"] = self.partition
        elif self.keep_partition and message.partition is not None:
            extra["partition"] = message.partition
        if message.timestamp:
            extra["timestamp"] = message.timestamp
        self._produce(topic, value, message.key if self.key is None else self.key, extra)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None,
                 extra: dict[str, Any]) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, **extra)
                break
            except BufferError:
                self._poll(0.05)
                raise_fatal(self.name, self._errors, topic, self.group)
            except KafkaException as exc:
                if exc.args[0].code() in ACCESS_DENIED or is_fenced(exc.args[0]):
                    raise TransportError(explain(self.name, exc.args[0], topic, self.group)
                                         ) from None
                raise TransportError(f"{topic}: cannot produce: {exc.args[0].str()}") from None
        self._poll(0)

    def idle(self) -> None:
        self._poll(0)

    def _poll(self, timeout: float) -> None:
        try:
            self.producer.poll(timeout)
        except CLIENT_FAILURES as exc:  # poll raises librdkafka's fatal errors
            raise TransportError(explain(self.name, raised_error(exc), self.topic, self.group)
                                 ) from None

    def flush(self) -> None:
        deadline = time.monotonic() + self.timeout + 5
        while len(self.producer) and time.monotonic() < deadline:
            try:
                self.producer.flush(0.5)
            except CLIENT_FAILURES as exc:  # a fatal producer error (e.g. idempotence refused)
                raise TransportError(explain(self.name, raised_error(exc), self.topic,
                                             self.group)) from None
            raise_fatal(self.name, self._errors, self.topic, self.group)
        raise_fatal(self.name, self._errors, self.topic, self.group)
        if len(self.producer):
            raise TransportError(f"broker {self.name}: {len(self.producer)} messages still "
                                 f"undelivered after {self.timeout:g}s")
        if self.failures:
            topic, reason = self.failures[0]
            raise TransportError(f"{len(self.failures)} message(s) not delivered to {topic}: "
                                 f"{reason}")

    def close(self, complete: bool = True) -> None:
        self.flush()


class CopyTransaction:
    """A copy from ``source`` to ``sink`` whose records and source positions the destination
    commits together (kcp/transports/kafka/offsets.py tells how and why)."""

    def __init__(self, source: KafkaSource, sink: KafkaSink) -> None:
        self.source, self.sink = source, sink
        self.group = sink.group = source.group or ""  # the sink names it in its errors
        self.store = PositionStore(sink.name, sink._properties, self.group, sink.timeout)
        self.store.create_topic()

    def assign(self, partitions: list[TopicPartition], resume: bool) -> None:
        """Take ``partitions`` over: fence their previous copier, then (``resume``) start each
        where the destination says the copy stands. A partition the destination knows nothing
        of starts from the source group's commit, else from -o."""
        if not partitions:
            return
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.sink.use_transactional_id(transactional_id(self.group, self.sink.name, keys))
        if not resume:
            return
        stored = self.store.read()
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                tp.offset = offset
                self.source.committed[(tp.topic, tp.partition)] = offset

    def commit(self, pending: list[TopicPartition]) -> None:
        self.sink.commit_transaction([position_record(self.group, tp.topic, tp.partition,
                                                      tp.offset) for tp in pending])

    def abort(self) -> None:
        self.sink.abort_transaction()


def exactly_once(source: KafkaSource, sink: KafkaSink) -> None:
    """Make ``sink`` commit ``source``'s positions inside its transactions, in the destination
    cluster, and ``source`` start from the positions found there."""
    if not source.group:
        raise UsageError("--exactly-once needs a consumer group: -g GROUP")
    if not sink.transactional:
        raise UsageError("--exactly-once needs a transactional producer")
    source.transaction = CopyTransaction(source, sink)


def start_group(address: Address, options: Options, config: Config,
                keep_committed: bool = False) -> None:
    """Commit for the group of ``options`` the positions a reader without a group would start
    at (-o, -n, --since, the end for tail): ``-j`` consumer processes then start there and go
    on from each other's commits, whoever owns a partition after a rebalance (not from "the
    end" as it is when a partition changes hands).  ``keep_committed``: only for partitions
    the group has no position for, and only if the group lets us (its members elsewhere
    position them otherwise)."""
    reader = KafkaSource(dataclasses.replace(address, group=None),  # assigned, not subscribed
                         dataclasses.replace(options, group=None, follow=False), config)
    group = broker_profile(address, options, config).group_id(options.group or address.group)
    try:
        starts = []
        for tp in reader.starts:
            if tp.offset < 0:  # beginning, end: where they are now
                try:
                    low, high = reader.consumer.get_watermark_offsets(tp, options.timeout)
                except KafkaException as exc:
                    raise TransportError(f"{tp.topic}[{tp.partition}]: cannot read offsets: "
                                         f"{exc.args[0].str()}") from None
                tp = TopicPartition(tp.topic, tp.partition,
                                    low if tp.offset == OFFSET_BEGINNING else high)
            starts.append(tp)
    finally:
        reader.close()
    committer = Consumer({**reader._settings, "group.id": group})
    try:
        if keep_committed:
            found = committer.committed([TopicPartition(tp.topic, tp.partition)
                                         for tp in starts], timeout=options.timeout)
            starts = [tp for tp, known in zip(starts, found, strict=True) if known.offset < 0]
        if starts:
            committer.commit(offsets=starts, asynchronous=False)
    except KafkaException as exc:
        if not keep_committed:
            raise TransportError(f"group {group}: cannot set its start for -j "
                                 f"({exc.args[0].str()}); is the group in use elsewhere?"
                                 ) from None
    finally:
        committer.close()


def open_source(address: Address, options: Options, config: Config) -> KafkaSource:
    return KafkaSource(address, options, config)


def open_sink(address: Address, options: Options, config: Config) -> KafkaSink:
    return KafkaSink(address, options, config)
