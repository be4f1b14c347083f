"""``-j N`` from Kafka into a byte stream: N consumer processes in one consumer group.

Kafka's own way to scale a reader out: each process is a member of the group (without ``-g``:
reads its share of the partitions, assigned directly, as ``-j 1`` reads without a group), owns
its partitions, and reads, decodes (natively when it can), filters and encodes them itself,
running the same pipeline as ``-j 1`` (kcp.pipeline.run) into an in-memory buffer.  It writes
the finished bytes to the run's output itself, a chunk at a time (whole records, in partition
order) under a lock the processes share, so chunks never interleave; only once a chunk is
written does the child acknowledge its messages, and it commits them at its next checkpoint
(made durable first, as ``-j 1`` does).  So the guarantees are those of one process: at least
once, order kept within a partition, a position committed only after its records were written.
The bytes never pass through the main process: it forks the children, counts what they report
(progress, the summary, ``--count``), watches the output's reader, and stops them.

A child giving partitions up in a rebalance, or ending (its partitions read to their end),
writes and commits what it holds first: the new owner starts where the old one stopped.

The children are forked before any Kafka client exists in the main process, in a process group
of their own (Ctrl-C and SIGTERM reach the main process only, which stops them).  A child that
dies is reported (exit status 1), never waited for; a child that finds the main process gone
(its pipe closed) stops.  A child that cannot write (the reader left, the disk is full) says so,
and the main process ends as ``-j 1`` would have.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import select
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from .contracts import Reader, SinkTraits, Source
from .errors import BadInput, KcpError, TransportError, UsageError
from .message import Message
from .options import Options
from .pacing import pacer_in
from .pipeline import Stage, Summary, run
from .plugins import PipeStage
from .transports.stream import QuietSource, StreamSink

# A child writes what it has after this many messages or bytes (or when its source is idle).
CHUNK_MESSAGES = 500
CHUNK_BYTES = 4 << 20
# How long the main process waits for its children to commit and leave the group at the end.
STOP_SECONDS = 15.0
# How long the main process waits for a child to finish writing a chunk before it stops them
# all; longer means the output's reader is not reading (a paused pager, a stuck pipe).
WRITE_SECONDS = 2.0
# The most pieces one writev takes.
_IOV_MAX = os.sysconf("SC_IOV_MAX")
# A child's failure is raised again in the main process as the same kind (its exit status).
_ERRORS = {kind.status: kind for kind in (KcpError, UsageError, BadInput, TransportError)}


def writes_alone(sink: object) -> bool:
    """True when ``-j`` consumer processes can write into ``sink`` themselves: a byte stream
    on a file descriptor (stdout, a file, a pager) whose format encodes records one by one."""
    if not (isinstance(sink, StreamSink) and sink.traits.encodes_alone):
        return False
    try:
        sink.stream.fileno()
    except (OSError, ValueError):  # a stream of a library caller's (BytesIO)
        return False
    return True


@dataclass
class Written:
    """What a child reports once it wrote a chunk: counted in the main process's summary."""

    records: int
    bytes_in: int
    skipped: int  # bad records skipped (--on-error) since its previous report
    last_timestamp: int | None


def throwaway_group() -> str:
    """The group of ``-j`` children reading without ``-g``: they need one to share partitions."""
    return f"kcp-j-{uuid.uuid4().hex}"


def check_stages(stages: list[Stage]) -> None:
    if any(isinstance(stage, PipeStage) for stage in stages):
        raise UsageError("--pipe-through runs one program: drop -j (let the program "
                         "use several cores)")
    if pacer_in(stages) is not None:
        raise UsageError("--pace releases records one at a time, in order: drop -j")


class _Output:
    """The run's output as the processes share it: the sink (inherited by fork), a lock held
    while a chunk is written, and how many records may still be written (--count; the main
    process sets it to 0 to stop all writing)."""

    def __init__(self, sink: StreamSink, limit: int | None) -> None:
        context = multiprocessing.get_context("fork")
        self.sink = sink
        self.lock = context.Lock()
        self.remaining = context.Value("q", (1 << 62) if limit is None else limit, lock=False)
        self.descriptor = sink.stream.fileno()

    def write(self, pieces: list[memoryview], ends: list[int]) -> int | None:
        """Write the records of ``pieces`` (ending at ``ends``) that may still be written, with
        no other chunk in between; how many that was, or None when no more may be written."""
        with self.lock:
            if self.remaining.value <= 0:
                return None
            records = min(len(ends), self.remaining.value)
            if records:
                try:
                    _write_pieces(self.descriptor, pieces[:ends[records - 1]])
                except BaseException:  # bytes of a record may be out: nothing goes after them
                    self.remaining.value = 0
                    raise
                self.remaining.value -= records
        return records

    def stop(self) -> bool:
        """No child writes from now on; False when one did not finish its chunk in time."""
        if not self.lock.acquire(timeout=WRITE_SECONDS):
            return False
        self.remaining.value = 0
        self.lock.release()
        return True


def _write_pieces(descriptor: int, pieces: list[memoryview]) -> None:
    """Write every piece, in order, with as few system calls as the kernel takes."""
    pending = deque(pieces)
    while pending:
        try:
            written = os.writev(descriptor, list(itertools.islice(pending, _IOV_MAX)))
        except BlockingIOError:  # a non-blocking output that is full: as a blocking one would
            select.select([], [descriptor], [])
            continue
        while written:
            first = pending[0]
            if written < len(first):
                pending[0] = first[written:]
                break
            written -= len(first)
            pending.popleft()


class _Pieces:
    """The stream a child's format writer writes into: what it is given, kept as it is (bytes
    are not copied) for one ``writev``."""

    def __init__(self) -> None:
        self.pieces: list[memoryview] = []
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        piece = memoryview(data)
        if not isinstance(piece.obj, bytes):  # a buffer its writer may change or reuse
            piece = memoryview(bytes(piece))
        if piece.nbytes:
            self.pieces.append(piece.cast("B"))
            self.size += piece.nbytes
        return piece.nbytes

    def flush(self) -> None:
        pass

    def clear(self) -> None:
        self.pieces, self.size = [], 0


@dataclass
class _Child:
    index: int
    process: Any
    conn: Connection


class ConsumerGroup(QuietSource):
    """The main process's side: a Source whose iteration yields what the children report they
    wrote (:class:`Written`, or None while they have nothing new).  The children commit, each
    after its own writes, so this source has nothing to commit."""

    def __init__(self, jobs: int, open_source: Callable[[Options], Source], options: Options,
                 decoder: Reader | None, stages: list[Stage], sink: StreamSink,
                 start: Callable[[Options], None] | None = None, grouped: bool = True) -> None:
        """``sink``: the run's output, which the children write (``writes_alone``).
        ``start``: commits for the group where the run starts (-o, -n, tail's end, ...);
        the first child calls it before the others are started, and all go on from there.
        ``grouped``: False when the children read without a group (no -g), each its share of
        the partitions (``Options.share``), assigned directly: no group, nothing committed."""
        check_stages(stages)
        self.output = _Output(sink, options.count)
        options = dataclasses.replace(
            options, count=None, progress=False, quiet=True, stats_interval=None,
            metrics_port=None, group=options.group or (throwaway_group() if grouped else None))
        child_options = options if start is None else dataclasses.replace(
            options, offset=None, tail_count=None)
        context = multiprocessing.get_context("fork")
        self.children: list[_Child] = []
        try:
            self._fork(jobs, context, open_source, options, child_options, decoder, stages,
                       start, grouped)
        except BaseException:  # they would go on writing the output
            self.close()
            raise

    def _fork(self, jobs: int, context: Any, open_source: Callable[[Options], Source],
              options: Options, child_options: Options, decoder: Reader | None,
              stages: list[Stage], start: Callable[[Options], None] | None,
              grouped: bool) -> None:
        for index in range(jobs):
            mine, theirs = context.Pipe()
            others = [child.conn for child in self.children] + [mine]
            starting = (start, options) if start is not None and index == 0 else None
            process = context.Process(
                target=_child_main, name=f"kcp -j {index + 1}/{jobs}", daemon=True,
                args=(theirs, others, open_source, child_options if grouped else
                      dataclasses.replace(child_options, share=(index, jobs)),
                      decoder, stages, self.output, starting))
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
            _, status, message, where = report
            raise _ERRORS.get(status, KcpError)(message, where=where)

    # -- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Written | None]:
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
                if kind == "wrote":
                    yield Written(*report[1:])
                elif kind == "end":
                    del live[conn]  # type: ignore[arg-type]
                elif kind == "output-error":  # as this process would have failed writing
                    _, number, reason = report
                    raise OSError(number, reason)
                else:  # "error": the child's failure, as it would have been in one process
                    _, status, message, where = report
                    raise _ERRORS.get(status, KcpError)(message, where=where)

    def _receive(self, child: _Child) -> tuple:
        try:
            return child.conn.recv()
        except (EOFError, OSError):
            child.process.join(1)
            raise KcpError(f"-j: consumer process {child.index + 1} died (exit status "
                           f"{child.process.exitcode}); run it without -j to find out why"
                           ) from None

    def stop_writing(self) -> None:
        """No child writes after this (the output is closed next).  A child that cannot finish
        its chunk (nobody reads the output) is killed: what it had not committed is read again
        next time."""
        stopped = False
        try:
            stopped = self.output.stop()
        finally:  # also when a second Ctrl-C ends the wait
            if not stopped:
                for child in self.children:
                    child.process.kill()
                for child in self.children:
                    child.process.join(1)

    def close(self) -> None:
        """Stop the children: each commits what it wrote and leaves the group."""
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
    """The main process stopped this child, or --count is reached."""


class _ChunkSink:
    """A child's sink: records encoded by the run's own format writer into a buffer, written
    to the run's output a chunk at a time; the messages of a chunk are acknowledged to the
    child's source once it is written, and the main process told."""

    traits = SinkTraits()

    def __init__(self, conn: Connection, output: _Output, source: Any) -> None:
        self.conn = conn
        self.output = output
        self.buffer = _Pieces()
        self.writer = output.sink.format_writer.open_stream(self.buffer)  # type: ignore[arg-type]
        self.source = source  # the KafkaSource
        self.ends: list[int] = []  # how many pieces the buffer holds at the end of each record
        self.counts: list[int] = []  # records in the buffer up to and including each message
        self.positions: list[Message] = []
        self.bytes_in = 0
        self.last_timestamp: int | None = None
        self.skipped = self.skipped_sent = 0  # the child's run's count, and how much was sent
        self.output_error: OSError | None = None
        self.stopped = False

    def write(self, message: Message) -> None:
        self.writer.write(message)
        self.ends.append(len(self.buffer.pieces))

    def handled(self, message: Message) -> None:
        """``message`` is done (written, filtered out, skipped): its position is acknowledged
        with the chunk holding its records."""
        self.positions.append(Message(topic=message.topic, partition=message.partition,
                                      offset=message.offset))
        self.counts.append(len(self.ends))
        if message.value is not None:
            self.bytes_in += len(message.value)
        self.last_timestamp = message.timestamp
        if (self.stopped or len(self.positions) >= CHUNK_MESSAGES
                or self.buffer.size >= CHUNK_BYTES):
            self.send()

    def send(self) -> None:
        """Write the chunk, acknowledge its messages, report it to the main process; raises
        _Stopped once nothing more may be written (--count, or the main process said so)."""
        self.listen()
        if self.stopped:
            raise _Stopped()
        if not self.positions and self.skipped == self.skipped_sent:
            return
        try:
            records = self.output.write(self.buffer.pieces, self.ends)
        except OSError as error:
            self.output_error = error
            raise
        if records is None:
            self.stopped = True
            raise _Stopped()
        # Cut at --count: the messages up to the one holding the last record written, as
        # -j 1 acknowledges them; otherwise all of them (some may have had no record).
        cut = records < len(self.ends)  # then records > 0: some were left to write
        done = bisect.bisect_left(self.counts, records) + 1 if cut else len(self.positions)
        for position in self.positions[:done]:
            self.source.ack(position)
        self.conn.send(("wrote", records, self.bytes_in, self.skipped - self.skipped_sent,
                        self.last_timestamp))
        self.skipped_sent = self.skipped
        self.buffer.clear()
        self.ends, self.counts, self.positions, self.bytes_in = [], [], [], 0
        if cut:
            self.stopped = True
            raise _Stopped()

    def listen(self) -> None:
        """Take the main process's word: stop."""
        if self.conn.poll(0) and self.conn.recv()[0] == "stop":
            self.stopped = True

    def make_durable(self) -> None:
        """What was written reaches the disk (a file's fsync) before positions are committed."""
        try:
            self.output.sink.flush()
        except OSError as error:
            self.output_error = error
            raise

    def sync(self) -> None:
        """Write what is pending and make the output durable (before a commit: a rebalance,
        a checkpoint, the end).  A stop found on the way is raised at the next record, not
        here: a rebalance's commit must still follow."""
        with contextlib.suppress(_Stopped):
            self.send()
        self.make_durable()

    def idle(self) -> None:
        self.send()

    def flush(self) -> None:
        self.sync()

    def copies_from(self, source: object) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        if self.output_error is not None:  # nothing is committed after a failed write
            raise self.output_error
        if complete:
            self.sync()
        else:  # stopped: what was written is still committed, so it is made durable first
            self.make_durable()


class _ChildSource:
    """The child's Kafka source, acknowledged only once the records are written."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.commits = source.commits  # without a group: nothing to commit, nothing to fsync
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
        # A rebalance commits only what is written: the pending chunk goes out first.
        self.source.flush_before_commit(None if flush is None or self.sink is None
                                        else self.sink.sync)

    def partition_count(self, topic: str) -> int | None:
        return self.source.partition_count(topic)

    def close(self) -> None:
        self.source.close()


def _child_main(conn: Connection, inherited: list[Connection],
                open_source: Callable[[Options], Source], options: Options,
                decoder: Reader | None, stages: list[Stage], output: _Output,
                starting: tuple[Callable[[Options], None], Options] | None) -> None:
    """One consumer process: the ``-j 1`` pipeline, written to the output a chunk at a time."""
    for other in inherited:  # the main process's ends: its death must show here as EOF
        other.close()
    os.setpgrp()  # Ctrl-C at the terminal reaches the main process only
    sink = None
    try:
        if starting is not None:
            start, start_options = starting
            start(start_options)
            conn.send(("started",))
        source = _ChildSource(open_source(options))
        sink = source.sink = _ChunkSink(conn, output, source.source)

        def count(summary: Summary) -> None:
            sink.skipped = summary.skipped

        run(source, sink, options, decoder=decoder, stages=stages,  # type: ignore[arg-type]
            progress=count)
    except _Stopped:
        pass
    except EOFError:
        return  # the main process is gone
    except OSError as error:
        if sink is not None and error is sink.output_error:
            _send(conn, ("output-error", error.errno, error.strerror))
        else:  # unless the main process is gone, which _send tolerates
            _send(conn, ("error", KcpError.status, f"-j consumer process failed: {error}",
                         None))
        return
    except KcpError as error:
        _send(conn, ("error", error.status, error.message, error.where))
        return
    except Exception as error:  # reported by the main process as a runtime error
        _send(conn, ("error", KcpError.status, f"-j consumer process failed: {error!r}",
                     None))
        return
    _send(conn, ("end",))
