"""``-j N`` from Kafka into a byte stream: N consumer processes in one consumer group.

Kafka's own way to scale a reader out: each process is a member of the group (without ``-g``:
reads its share of the partitions, assigned directly, as ``-j 1`` reads without a group), owns
its partitions, and reads, decodes (natively when it can), filters and encodes them itself,
running the same pipeline as ``-j 1`` (kcp.pipeline.run) into an in-memory buffer.  It sends the
finished bytes to the main process in chunks (a chunk: whole records, in partition order), never
messages.  The main process writes each chunk to the real sink as it comes, and acknowledges it
back once the sink holds it (flushed); only then does the child commit the chunk's positions.
So the guarantees are those of one process: at least once, order kept within a partition, a
position committed only after the main process wrote its bytes.

A child giving partitions up in a rebalance first has everything it sent written and
acknowledged, then commits, then lets go: the new owner starts where the old one stopped.  A
child ending (its partitions read to their end) does the same before it leaves the group.

The children are forked before any Kafka client exists in the main process, in a process group
of their own (Ctrl-C and SIGTERM reach the main process only, which stops them), with stdout on
/dev/null.  A child that dies is reported (exit status 1), never waited for; a child that finds
the main process gone (its pipe closed) stops.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import io
import multiprocessing
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from .contracts import Reader, SinkTraits, Source, Writer
from .errors import BadInput, KcpError, TransportError, UsageError
from .message import Message
from .options import Options
from .pacing import pacer_in
from .pipeline import Stage, Summary, run
from .plugins import PipeStage

# A child sends what it has after this many messages or bytes (or when its source is idle).
CHUNK_MESSAGES = 500
CHUNK_BYTES = 4 << 20
# How long the main process waits for its children to commit and leave the group at the end.
STOP_SECONDS = 15.0
# A child's failure is raised again in the main process as the same kind (its exit status).
_ERRORS = {kind.status: kind for kind in (KcpError, UsageError, BadInput, TransportError)}


@dataclass
class Chunk:
    """Finished output of a child: the bytes of whole records, and their boundaries."""

    child: int
    seq: int
    data: bytes | memoryview  # valid until the next chunk is read
    ends: list[int]  # where each record's bytes end in ``data``
    counts: list[int]  # records in ``data`` up to and including each message read
    bytes_in: int = 0
    last_timestamp: int | None = None
    skipped: int = 0  # bad records skipped (--on-error) since the previous chunk

    def cut(self, records: int) -> Chunk:
        """The first ``records`` records only, and the messages they come from."""
        messages = bisect.bisect_left(self.counts, records) + 1 if records else 0
        data = self.data[:self.ends[records - 1]] if records else b""
        return dataclasses.replace(self, data=data, ends=self.ends[:records],
                                   counts=self.counts[:messages])


def throwaway_group() -> str:
    """The group of ``-j`` children reading without ``-g``: they need one to share partitions."""
    return f"kcp-j-{uuid.uuid4().hex}"


def check_stages(stages: list[Stage]) -> None:
    if any(isinstance(stage, PipeStage) for stage in stages):
        raise UsageError("--pipe-through runs one program: drop -j (let the program "
                         "use several cores)")
    if pacer_in(stages) is not None:
        raise UsageError("--pace releases records one at a time, in order: drop -j")


@dataclass
class _Child:
    index: int
    process: Any
    conn: Connection
    written: tuple[int, int] | None = None  # (seq, messages) of the last chunk written
    acked: tuple[int, int] | None = None
    ended: bool = False


class ConsumerGroup:
    """The main process's side: a Source whose iteration yields the children's :class:`Chunk`
    (or None while they have nothing new); ``ack`` a chunk once written, ``checkpoint`` to let
    the children commit what was acknowledged."""

    commits = True
    bytes_read = 0

    def __init__(self, jobs: int, open_source: Callable[[Options], Source], options: Options,
                 decoder: Reader | None, stages: list[Stage], writer: Writer,
                 start: Callable[[Options], None] | None = None, grouped: bool = True) -> None:
        """``start``: commits for the group where the run starts (-o, -n, tail's end, ...);
        the first child calls it before the others are started, and all go on from there.
        ``grouped``: False when the children read without a group (no -g), each its share of
        the partitions (``Options.share``), assigned directly: no group, nothing committed."""
        check_stages(stages)
        options = dataclasses.replace(
            options, count=None, progress=False, quiet=True, stats_interval=None,
            metrics_port=None, group=options.group or (throwaway_group() if grouped else None))
        child_options = options if start is None else dataclasses.replace(
            options, offset=None, tail_count=None)
        context = multiprocessing.get_context("fork")
        self.children: list[_Child] = []
        self.flush_sink: Callable[[], None] | None = None
        self.buffer = bytearray()  # the chunk being written
        for index in range(jobs):
            mine, theirs = context.Pipe()
            others = [child.conn for child in self.children] + [mine]
            starting = (start, options) if start is not None and index == 0 else None
            process = context.Process(
                target=_child_main, name=f"kcp -j {index + 1}/{jobs}", daemon=True,
                args=(theirs, others, open_source, child_options if grouped else
                      dataclasses.replace(child_options, share=(index, jobs)),
                      decoder, stages, writer, starting))
            process.start()
            theirs.close()
            child = _Child(index, process, mine)
            self.children.append(child)
            if starting is not None:  # the others start once the group has its positions
                self._started(child)

    def _started(self, child: _Child) -> None:
        try:
            report = child.conn.recv()
        except (EOFError, OSError):
            report = ("error", KcpError.status, "-j: the first consumer process died", None)
        if report[0] == "error":
            self.close()
            _, status, message, where = report
            raise _ERRORS.get(status, KcpError)(message, where=where)

    # -- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk | None]:
        live = {child.conn: child for child in self.children}
        while live:
            ready = wait(list(live), timeout=0.2)
            if not ready:
                yield None
                continue
            for conn in ready:
                child = live[conn]  # type: ignore[index]
                report = self._receive(child)
                kind = report[0]
                if kind == "chunk":
                    _, seq, size, *rest = report
                    yield Chunk(child.index, seq, memoryview(self.buffer)[:size], *rest)
                elif kind == "sync":  # it gives partitions up, or ends: written, then acked
                    if self.flush_sink is not None:
                        self.flush_sink()
                    self._acknowledge(child)
                elif kind == "end":
                    child.ended = True
                    del live[conn]  # type: ignore[arg-type]
                else:  # "error": the child's failure, as it would have been in one process
                    _, status, message, where = report
                    raise _ERRORS.get(status, KcpError)(message, where=where)

    def _receive(self, child: _Child) -> tuple:
        """A child's next report; a chunk's bytes (which follow it) in ``self.buffer``, a
        buffer used over and over."""
        try:
            report = child.conn.recv()
            if report[0] == "chunk":
                size = report[2]
                if len(self.buffer) < size:
                    self.buffer = bytearray(size + (size >> 1))
                child.conn.recv_bytes_into(self.buffer)
            return report
        except (EOFError, OSError):
            child.process.join(1)
            raise KcpError(f"-j: consumer process {child.index + 1} died (exit status "
                           f"{child.process.exitcode}); run it without -j to find out why"
                           ) from None

    def ack(self, chunk: Chunk) -> None:  # type: ignore[override]
        self.children[chunk.child].written = (chunk.seq, len(chunk.counts))

    def checkpoint(self) -> None:
        for child in self.children:
            self._acknowledge(child)

    def _acknowledge(self, child: _Child) -> None:
        if child.written is not None and child.written != child.acked and not child.ended:
            _send(child.conn, ("ack", *child.written))
            child.acked = child.written

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        self.flush_sink = flush

    def partition_count(self, topic: str) -> int | None:
        return None

    def close(self) -> None:
        """Stop the children: each commits what was acknowledged and leaves the group.  What
        they still send meanwhile is dropped (not acknowledged: read again next time)."""
        for child in self.children:
            _send(child.conn, ("stop",))
        running = {child.conn: child for child in self.children}
        deadline = time.monotonic() + STOP_SECONDS
        while running and time.monotonic() < deadline:
            for conn in wait(list(running), timeout=max(0.0, deadline - time.monotonic())):
                try:
                    conn.recv_bytes()  # type: ignore[union-attr]
                except (EOFError, OSError):  # it has exited
                    del running[conn]  # type: ignore[arg-type]
        for child in self.children:
            child.process.join(0 if child.conn in running else 1)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(1)
            child.conn.close()


def _send(conn: Connection, report: tuple) -> None:
    with contextlib.suppress(OSError):  # the other side is gone: it shows as EOF when read
        conn.send(report)


class _Stopped(Exception):
    """The main process stopped this child."""


class _ChunkSink:
    """A child's sink: records encoded by the run's own format writer into a buffer, sent to
    the main process in chunks; positions acknowledged by it go to the child's source."""

    traits = SinkTraits()

    def __init__(self, conn: Connection, writer: Writer, source: Any) -> None:
        self.conn = conn
        self.buffer = io.BytesIO()
        self.writer = writer.open_stream(self.buffer)
        self.source = source  # the KafkaSource, acknowledged as the main process says
        self.ends: list[int] = []
        self.counts: list[int] = []
        self.positions: list[Message] = []
        self.bytes_in = 0
        self.last_timestamp: int | None = None
        self.seq = 0
        self.sent: deque[tuple[int, list[Message]]] = deque()
        self.acked = 0
        self.stopped = False
        self.skipped = self.skipped_sent = 0  # the child's run's count, and how much was sent

    def write(self, message: Message) -> None:
        self.writer.write(message)
        self.ends.append(self.buffer.tell())

    def handled(self, message: Message) -> None:
        """``message`` is done (written, filtered out, skipped): its position goes with the
        chunk holding its records."""
        self.positions.append(Message(topic=message.topic, partition=message.partition,
                                      offset=message.offset))
        self.counts.append(len(self.ends))
        if message.value is not None:
            self.bytes_in += len(message.value)
        self.last_timestamp = message.timestamp
        if len(self.positions) >= CHUNK_MESSAGES or self.buffer.tell() >= CHUNK_BYTES:
            self.send()

    def send(self) -> None:
        self.listen()
        if self.stopped:
            raise _Stopped()
        if not self.positions and self.skipped == self.skipped_sent:
            return
        self.seq += 1
        size = self.buffer.tell()
        self.conn.send(("chunk", self.seq, size, self.ends, self.counts, self.bytes_in,
                        self.last_timestamp, self.skipped - self.skipped_sent))
        with self.buffer.getbuffer() as view:  # the bytes themselves: not pickled, not copied
            self.conn.send_bytes(view, 0, size)
        self.skipped_sent = self.skipped
        self.sent.append((self.seq, self.positions))
        self.buffer.seek(0)  # the buffer is written over, never shrunk: no allocation per chunk
        self.ends, self.counts, self.positions, self.bytes_in = [], [], [], 0

    def listen(self, block: bool = False) -> None:
        """Take the main process's word: acknowledgements, or stop."""
        while not self.stopped and (block or self.conn.poll(0)):
            report = self.conn.recv()
            if report[0] == "stop":
                self.stopped = True
            else:
                self._acknowledged(report[1], report[2])
            block = False

    def _acknowledged(self, seq: int, messages: int) -> None:
        while self.sent and self.sent[0][0] <= seq:
            sent_seq, positions = self.sent.popleft()
            for position in positions if sent_seq < seq else positions[:messages]:
                self.source.ack(position)
        self.acked = seq

    def sync(self) -> None:
        """Send what is pending and wait until the main process wrote and acknowledged it all
        (before a rebalance commits, and at the end)."""
        if self.stopped:
            return
        try:
            self.send()
        except _Stopped:
            return
        if self.acked < self.seq:
            self.conn.send(("sync", self.seq))
            while self.acked < self.seq and not self.stopped:
                self.listen(block=True)

    def idle(self) -> None:
        self.send()

    def flush(self) -> None:
        self.send()

    def copies_from(self, source: object) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        if complete and self.source.commits:
            self.sync()  # what was sent is written before the positions are committed
        elif complete:
            with contextlib.suppress(_Stopped):
                self.send()


class _ChildSource:
    """The child's Kafka source, acknowledged only once the main process wrote the records."""

    commits = True

    def __init__(self, source: Source) -> None:
        self.source = source
        self.sink: _ChunkSink | None = None

    def __iter__(self) -> Iterator[Message | None]:
        return iter(self.source)

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_read

    def ack(self, message: Message) -> None:
        assert self.sink is not None
        self.sink.handled(message)

    def checkpoint(self) -> None:
        self.source.checkpoint()

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        # A rebalance commits only what the main process holds: everything sent, acknowledged.
        self.source.flush_before_commit(None if flush is None or self.sink is None
                                        else self.sink.sync)

    def partition_count(self, topic: str) -> int | None:
        return self.source.partition_count(topic)

    def close(self) -> None:
        self.source.close()


def _child_main(conn: Connection, inherited: list[Connection],
                open_source: Callable[[Options], Source], options: Options,
                decoder: Reader | None, stages: list[Stage], writer: Writer,
                starting: tuple[Callable[[Options], None], Options] | None) -> None:
    """One consumer process: the ``-j 1`` pipeline into chunks sent on ``conn``."""
    for other in inherited:  # the main process's ends: its death must show here as EOF
        other.close()
    os.setpgrp()  # Ctrl-C at the terminal reaches the main process only
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a `| cat` downstream ends with the main process, not with us
    os.close(devnull)
    try:
        if starting is not None:
            start, start_options = starting
            start(start_options)
            conn.send(("started",))
        source = _ChildSource(open_source(options))
        sink = source.sink = _ChunkSink(conn, writer, source.source)

        def count(summary: Summary) -> None:
            sink.skipped = summary.skipped

        run(source, sink, options, decoder=decoder, stages=stages,  # type: ignore[arg-type]
            progress=count)
    except _Stopped:
        pass
    except (EOFError, BrokenPipeError):
        return  # the main process is gone
    except KcpError as error:
        _send(conn, ("error", error.status, error.message, error.where))
        return
    except Exception as error:  # reported by the main process as a runtime error
        _send(conn, ("error", KcpError.status, f"-j consumer process failed: {error!r}",
                     None))
        return
    _send(conn, ("end",))
