"""Faults against the real broker: it is SIGKILLed and restarted under a running kcp.

The session broker (tests/kafka/broker.py) restarts on the same data directory and ports, as a
crashed broker brought back by its supervisor would. Each test leaves it running again; the
autouse fixture in conftest.py revives it should a test die between kill() and restart().
Consumer groups sharing a topic are tested here too (partitions split, each record once).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kcptest import KCP, kcp_env, run_kcp

pytestmark = pytest.mark.kafka


@pytest.fixture
def broker(kafka_broker: Any) -> Any:
    if kafka_broker is None:
        pytest.skip("KCP_TEST_BOOTSTRAP names an external broker: it cannot be killed here")
    return kafka_broker


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return kcp_env(kafka_bootstrap, tmp_path)


class Streaming:
    """A kcp subprocess whose stdout lines are collected by a thread as they come."""

    def __init__(self, args: list[str], env: dict[str, str], stdin: Any = None,
                 delay: float = 0.0) -> None:
        self.process = subprocess.Popen([KCP, *args], env=env, stdin=stdin,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[bytes] = []
        self.delay = delay  # a slow reader: kcp blocks on the full pipe (back-pressure)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if self.delay:
                time.sleep(self.delay)

    def documents(self) -> list[Any]:
        return [orjson.loads(line) for line in list(self.lines)]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.documents()):
            if self.process.poll() is not None:
                raise AssertionError(f"kcp exited ({self.process.returncode}) before {what}: "
                                     f"{self.stderr()}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout)
        self._reader.join(5)
        return status

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def producer(bootstrap: str) -> Producer:
    # What a survey's alert producer does: acks=all with idempotence, so a broker restart
    # neither loses nor duplicates what it retries.
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 2})


def send(p: Producer, topic: str, ids: range, partitions: int = 1, tag: str = "id",
         pad: int = 0) -> None:
    for i in ids:
        while True:
            try:
                p.produce(topic, orjson.dumps({tag: i, "pad": "x" * pad} if pad else {tag: i}),
                          partition=i % partitions)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)


def flushed(p: Producer, timeout: float = 60) -> None:
    assert p.flush(timeout) == 0, "the test's own producer could not deliver"


# -- the broker restarts under a reader ----------------------------------------------------------

@pytest.mark.parametrize("command", [["consume", "-f"], ["tail"]], ids=["consume-f", "tail"])
def test_reader_without_group_survives_a_broker_restart_exactly_once(
        broker, env, make_topic, kafka_bootstrap, command):
    topic = make_topic(partitions=2)
    p = producer(kafka_bootstrap)
    reader = Streaming([command[0], topic, *command[1:], "--compact"], env)
    try:
        # tail starts at the end: probe until the reader is there, so nothing is sent before.
        probe = 0
        deadline = time.monotonic() + 30
        while not any("probe" in d for d in reader.documents()):
            assert time.monotonic() < deadline and reader.process.poll() is None, reader.stderr()
            send(p, topic, range(probe, probe + 2), partitions=2, tag="probe")
            flushed(p)
            probe += 2
            time.sleep(0.3)
        send(p, topic, range(0, 100), partitions=2)
        flushed(p)
        reader.wait_for(lambda docs: sum("id" in d for d in docs) >= 100, 30, "the first 100")

        broker.kill()
        send(p, topic, range(100, 150), partitions=2)  # queued by the producer meanwhile
        time.sleep(1)
        broker.restart()
        send(p, topic, range(150, 200), partitions=2)
        flushed(p)
        reader.wait_for(lambda docs: sum("id" in d for d in docs) >= 200, 90,
                        "the records sent around the restart")
        time.sleep(1.5)  # room for a duplicate to show up, if kcp re-read anything
        assert reader.stop() == 130
    finally:
        reader.kill()
    ids = [d["id"] for d in reader.documents() if "id" in d]
    assert sorted(ids) == list(range(200)), "each record exactly once across the restart"
    per_partition = [[i for i in ids if i % 2 == part] for part in (0, 1)]
    assert all(seq == sorted(seq) for seq in per_partition), "order kept in each partition"


# -- the broker is down for a producer -----------------------------------------------------------

def _payload_lines(start: int, stop: int) -> bytes:
    # Raw payloads, one per line; padded so that stdin's 64 kB reads deliver them in bursts.
    return b"".join(orjson.dumps({"id": i, "pad": "x" * 200}) + b"\n" for i in range(start, stop))


def _topic_ids(bootstrap: str, topic: str, timeout: float = 30) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    ids: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None:
                continue
            if record.error() is not None:
                if record.error().code() == KafkaError._PARTITION_EOF:
                    break
                continue
            ids.append(orjson.loads(record.value())["id"])
    finally:
        consumer.close()
    return ids


def _produce_across_a_crash(broker: Any, env: dict, topic: str, timeout: float,
                            back_after: float | None,
                            while_down: Callable[[], None] | None = None) -> tuple[int, str]:
    """kcp produce reading stdin; the broker is killed once the first records are in the
    topic, more records follow, and the broker comes back after ``back_after`` s (or only
    after kcp ended: None, when ``while_down`` runs first)."""
    writer = Streaming(["produce", topic, "--raw", "--timeout", str(timeout)], env,
                       stdin=subprocess.PIPE)
    stdin = writer.process.stdin
    assert stdin is not None

    def feed(data: bytes) -> None:
        # kcp may give up first (its checkpoint found undelivered messages): its exit status
        # and message are what the caller checks.
        with contextlib.suppress(BrokenPipeError):
            stdin.write(data)
            stdin.flush()

    try:
        feed(_payload_lines(0, 1000))
        deadline = time.monotonic() + 30
        watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watch"})
        while watcher.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1] < 200:
            assert time.monotonic() < deadline and writer.process.poll() is None, writer.stderr()
            time.sleep(0.05)
        watcher.close()
        broker.kill()
        feed(_payload_lines(1000, 2000))
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        if back_after is not None:
            time.sleep(back_after)
            broker.restart()
        status = writer.process.wait(timeout + 30)
        if while_down is not None:
            while_down()
        return status, writer.stderr()
    finally:
        writer.kill()
        if not broker.running:
            broker.restart()


def test_produce_completes_when_the_broker_returns_within_timeout(
        broker, env, make_topic, kafka_bootstrap):
    topic = make_topic()
    # A generous --timeout: on a loaded machine the broker itself may take a while to return;
    # kcp finishes as soon as everything is acknowledged anyway.
    status, stderr = _produce_across_a_crash(broker, env, topic, timeout=120, back_after=2)
    assert status == 0, stderr
    assert stderr == ""
    # Idempotence: the retries after the restart duplicate nothing, and nothing is lost.
    assert sorted(_topic_ids(kafka_bootstrap, topic)) == list(range(2000))


def test_produce_exits_4_when_the_broker_is_down_naming_undelivered_messages(
        broker, env, make_topic, kafka_bootstrap):
    topic = make_topic()
    refused = []

    def produce_while_down() -> None:
        started = time.monotonic()
        refused.append(run_kcp(["produce", topic, "--raw", "--timeout", "3"], env,
                               stdin=b"a\nb\n"))
        refused.append(time.monotonic() - started)

    started = time.monotonic()
    status, stderr = _produce_across_a_crash(broker, env, topic, timeout=4, back_after=None,
                                             while_down=produce_while_down)
    assert status == 4, stderr
    assert time.monotonic() - started < 40
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "not delivered" in lines[0] or "undelivered" in lines[0], lines[0]
    # Whatever the broker had written before it died is there, once. (A write whose
    # acknowledgement the crash lost is reported too: "not delivered" means "not acknowledged".)
    ids = _topic_ids(kafka_bootstrap, topic)
    assert len(ids) == len(set(ids)) >= 200

    # A produce that starts while the broker is down (refusing connections) gives up at once.
    result, seconds = refused
    assert result.returncode == 4
    assert seconds < 15
    message = result.stderr.decode()
    assert message.startswith(f"kcp: cannot reach broker {broker.bootstrap}: Connection refused")
    assert message.count("\n") == 1 and "Traceback" not in message


# -- scale-out: members of one consumer group split the partitions -------------------------------

def _ids_and_partitions(docs: list[Any]) -> list[int]:
    return [d["id"] for d in docs if "id" in d]


def test_group_members_following_split_partitions_each_record_once(
        env, make_topic, kafka_bootstrap):
    topic = make_topic(partitions=4)
    group = f"split_{uuid.uuid4().hex[:8]}"
    p = producer(kafka_bootstrap)
    send(p, topic, range(0, 200), partitions=4)
    flushed(p)
    first = Streaming(["consume", topic, "-g", group, "-f", "--compact"], env)
    second = None
    try:
        first.wait_for(lambda docs: len(docs) >= 200, 30, "the first member's records")
        second = Streaming(["consume", topic, "-g", group, "-f", "--compact"], env)
        sent = 200
        deadline = time.monotonic() + 30
        while not second.documents():  # the rebalance gives it partitions, then it reads
            assert time.monotonic() < deadline, second.stderr()
            send(p, topic, range(sent, sent + 8), partitions=4)
            flushed(p)
            sent += 8
            time.sleep(0.3)
        split_at = sent
        send(p, topic, range(sent, sent + 400), partitions=4)
        sent += 400
        flushed(p)
        members = (first, second)
        first.wait_for(lambda _: sum(len(m.documents()) for m in members) >= sent, 30,
                       "every record from one member or the other")
        time.sleep(1.5)  # room for a duplicate to show up
        assert first.stop() == 130 and second.stop() == 130
    finally:
        first.kill()
        if second is not None:
            second.kill()
    ids = _ids_and_partitions(first.documents()) + _ids_and_partitions(second.documents())
    assert sorted(ids) == list(range(sent)), "each record once, from one member or the other"
    # After the rebalance each member reads its own partitions.
    later = [{i % 4 for i in _ids_and_partitions(m.documents()) if i >= split_at}
             for m in (first, second)]
    assert later[0] and later[1] and not later[0] & later[1], later


def test_group_members_reading_to_the_end_share_the_work_each_record_once(
        env, make_topic, kafka_bootstrap):
    total = 4000
    topic = make_topic(partitions=4)
    p = producer(kafka_bootstrap)
    send(p, topic, range(total), partitions=4, pad=500)
    flushed(p)
    group = f"end_{uuid.uuid4().hex[:8]}"
    args = ["consume", topic, "-g", group, "--compact"]
    # The first member reads slowly (its pipe fills), so the second joins while it is busy.
    first = Streaming(args, env, delay=0.002)
    second = None
    try:
        first.wait_for(lambda docs: len(docs) >= 200, 30, "the first member's first records")
        second = Streaming(args, env)
        # Neither may stop while the other still has partitions to read: a member whose
        # partitions were revoked for a rebalance has not reached the end.
        assert first.process.wait(60) == 0, first.stderr()
        assert second.process.wait(60) == 0, second.stderr()
    finally:
        first.kill()
        if second is not None:
            second.kill()
    first._reader.join(5)
    second._reader.join(5)
    ids = _ids_and_partitions(first.documents()) + _ids_and_partitions(second.documents())
    assert sorted(ids) == list(range(total)), (len(ids), len(set(ids)))
    assert _ids_and_partitions(second.documents()), "the second member took partitions over"
