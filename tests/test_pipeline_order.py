"""``pipeline.run`` with a fake source and sink: what happens in which order."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from kcp import pipeline
from kcp.contracts import SinkTraits
from kcp.errors import BadInput, TransportError
from kcp.message import Message
from kcp.options import Options


class Journal(list):
    """Every call of the fakes, in order."""


class FakeSource:
    commits = True
    bytes_read = 0

    def __init__(self, journal: Journal, messages: list[Message | None],
                 pause: float = 0.0) -> None:
        self.journal, self.messages, self.pause = journal, messages, pause
        self.flush: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[Message | None]:
        for message in self.messages:
            if self.pause:
                time.sleep(self.pause)
            yield message

    def ack(self, message: Message) -> None:
        self.journal.append(("ack", message.offset))

    def checkpoint(self) -> None:
        self.journal.append(("commit",))

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        self.flush = flush

    def partition_count(self, topic: str) -> int | None:
        return None

    def close(self) -> None:
        self.journal.append(("close source",))


class FakeSink:
    traits = SinkTraits()

    def __init__(self, journal: Journal, fail_at: int | None = None) -> None:
        self.journal, self.fail_at = journal, fail_at

    def write(self, message: Message) -> None:
        if message.offset == self.fail_at:
            raise TransportError("the sink broke")
        self.journal.append(("write", message.offset))

    def copies_from(self, source: object) -> None:
        pass

    def idle(self) -> None:
        self.journal.append(("idle",))

    def flush(self) -> None:
        self.journal.append(("flush",))

    def close(self, complete: bool = True) -> None:
        self.journal.append(("close sink", complete))


def records(n: int) -> list[Message | None]:
    return [Message(value=b"x", datum={"n": i}, decoded=True, topic="t", partition=0, offset=i)
            for i in range(n)]


def test_every_commit_comes_after_the_sink_flushed_what_it_acknowledges():
    journal = Journal()
    source = FakeSource(journal, [*records(4), None, *records(2)], pause=0.3)
    pipeline.run(source, FakeSink(journal), Options())
    commits = [i for i, entry in enumerate(journal) if entry == ("commit",)]
    assert len(commits) >= 2  # by the clock (CHECKPOINT_SECONDS), and at the end
    for at in commits:
        assert journal[at - 1] in (("flush",), ("close sink", True)), journal
    # the last word: the sink closed complete, then the final commit, then the source closed
    assert journal[-3:] == [("close sink", True), ("commit",), ("close source",)]
    writes = [e for e in journal if e[0] == "write"]
    acks = [e for e in journal if e[0] == "ack"]
    assert [w[1] for w in writes] == [a[1] for a in acks] == [0, 1, 2, 3, 0, 1]
    for offset in range(4):  # each record written before it is acknowledged
        assert journal.index(("write", offset)) < journal.index(("ack", offset))


def test_a_failing_sink_is_closed_incomplete_and_what_it_holds_is_committed():
    journal = Journal()
    with pytest.raises(TransportError):
        pipeline.run(FakeSource(journal, records(5)), FakeSink(journal, fail_at=3), Options())
    assert ("ack", 3) not in journal
    assert journal[-3:] == [("close sink", False), ("commit",), ("close source",)]


def test_bad_input_under_fail_ends_a_complete_copy_of_what_came_before():
    journal = Journal()
    bad = Message(topic="t", partition=0, offset=2, error=BadInput("corrupt"))
    with pytest.raises(BadInput, match=r"t\[0\]@2: corrupt"):
        pipeline.run(FakeSource(journal, [*records(2), bad]), FakeSink(journal), Options())
    assert journal[-3:] == [("close sink", True), ("commit",), ("close source",)]


def test_skip_acknowledges_the_bad_record_and_goes_on():
    journal = Journal()
    bad = Message(topic="t", partition=0, offset=2, error=BadInput("corrupt"))
    more = records(4)[3:]
    summary = pipeline.run(FakeSource(journal, [*records(2), bad, *more]), FakeSink(journal),
                           Options(on_error="skip"))
    assert (summary.records, summary.skipped) == (3, 1)
    assert ("ack", 2) in journal and ("write", 2) not in journal


def test_count_stops_after_n_records_written():
    journal = Journal()
    summary = pipeline.run(FakeSource(journal, records(10)), FakeSink(journal), Options(count=3))
    assert summary.records == 3
    assert [e[1] for e in journal if e[0] == "write"] == [0, 1, 2]


def test_the_source_learns_the_sink_flush_for_rebalances_and_forgets_it_at_the_end():
    journal = Journal()
    source = FakeSource(journal, records(1))
    seen = []

    class Watching(FakeSink):
        def write(self, message: Message) -> None:
            seen.append(source.flush)
            super().write(message)

    sink = Watching(journal)
    pipeline.run(source, sink, Options())
    assert seen == [sink.flush]
    assert source.flush is None


class ConsumerProcesses(FakeSource):
    """What -j consumer processes report (kcp.group): they write and commit by themselves."""

    commits = False

    def ack(self, written) -> None:  # type: ignore[override]
        self.journal.append(("counted", written.records))

    def stop_writing(self) -> None:
        self.journal.append(("stop writing",))


def test_what_consumer_processes_wrote_is_counted_until_the_count_then_their_writing_stops():
    from kcp.group import Written

    # the processes cut their own chunks at the count: the last report is never read
    reports = [Written(4, 100, 0, 5), None, Written(2, 60, 1, 7), Written(3, 90, 0, 9)]
    journal = Journal()
    summary = pipeline.run(ConsumerProcesses(journal, reports), FakeSink(journal),
                           Options(count=6), consumer_processes=True)
    assert (summary.records, summary.bytes_in, summary.skipped) == (6, 160, 1)
    assert summary.last_timestamp == 7
    assert [entry for entry in journal if entry[0] == "counted"] == [("counted", 4),
                                                                     ("counted", 2)]
    # nothing is written into the output once it is closed
    assert journal.index(("stop writing",)) == journal.index(("close sink", True)) - 1


def test_a_chunk_is_written_whole_into_a_full_non_blocking_pipe():
    """-j consumer processes write a chunk with writev, which the kernel may cut anywhere."""
    import os
    import threading

    from kcp.group import _write_pieces

    pieces = [memoryview(bytes([i % 251]) * (50 + i)) for i in range(1500)]  # > IOV_MAX
    reading, writing = os.pipe()
    os.set_blocking(writing, False)
    received = bytearray()

    def read() -> None:
        while chunk := os.read(reading, 1 << 14):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=read)
    reader.start()
    _write_pieces(writing, pieces)
    os.close(writing)
    reader.join()
    os.close(reading)
    assert bytes(received) == b"".join(pieces)


class LinesWriter:
    """A format writer whose records are their values, one per line."""

    def open_stream(self, stream):
        from kcp.formats.lines import LineStreamWriter

        return LineStreamWriter(stream, lambda message: message.value)


def test_a_consumer_process_acknowledges_what_it_wrote_and_stops_at_the_shared_count(tmp_path):
    """kcp.group: records reach the output before their messages are acknowledged; --count is
    shared (the records left, taken under the lock); once it is reached nothing more is written
    or acknowledged; the main process's stop ends all writing."""
    import multiprocessing

    from kcp.group import _ChunkSink, _Output, _Stopped
    from kcp.transports.stream import StreamSink

    path = tmp_path / "out.jsonl"
    output = _Output(StreamSink(open(path, "wb"), LinesWriter(), str(path)), limit=3)
    journal = Journal()
    source = FakeSource(journal, [])
    mine, theirs = multiprocessing.Pipe()
    sink = _ChunkSink(theirs, output, source)

    def message(offset: int, *values: bytes) -> None:
        for value in values:
            sink.write(Message(value=value))
            journal.append(("written", path.read_bytes().count(b"\n")))
        sink.handled(Message(value=b"x", offset=offset))

    message(0, b"a", b"b")
    message(1)  # filtered out: no record
    message(2, b"c", b"d")  # only c fits in the count
    assert journal[-1] == ("written", 0)  # still in the chunk
    with pytest.raises(_Stopped):
        sink.send()
    assert path.read_bytes() == b"a\nb\nc\n"
    # the message cut by --count is acknowledged, as -j 1 does, and nothing after it
    assert [entry for entry in journal if entry[0] == "ack"] == [("ack", 0), ("ack", 1), ("ack", 2)]
    assert mine.recv() == ("wrote", 3, 3, 0, None)

    other = _ChunkSink(theirs, output, FakeSource(journal, []))
    other.write(Message(value=b"e"))
    other.handled(Message(value=b"x", offset=3))
    with pytest.raises(_Stopped):
        other.send()
    assert path.read_bytes() == b"a\nb\nc\n" and ("ack", 3) not in journal
    assert output.stop() and output.write([memoryview(b"f\n")], [1]) is None
