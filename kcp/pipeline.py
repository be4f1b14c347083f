"""The one loop every command runs: source -> decode -> stages -> sink.

It counts, applies ``--count`` and the ``--on-error`` policy, keeps stdout prompt when the
source is idle, and checkpoints: the sink is made durable first, then the source commits what
was handled, so an offset is never committed for a record the sink does not hold.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from .contracts import Reader, Sink, SinkTraits, Source
from .errors import BadInput, Terminated, UsageError
from .message import Message
from .options import Options
from .pacing import pacer_in
from .parallel import Workers
from .stages import apply

CHECKPOINT_SECONDS = 1.0
# A stage returns None (drop the record), a Message, or several Messages.
Stage = Callable[[Message], Any]


@runtime_checkable
class ClosingStage(Protocol):
    """A stage holding something to release at the end (a --map module, a --pipe-through
    program)."""

    def __call__(self, message: Message) -> Any: ...

    def close(self) -> None: ...


@runtime_checkable
class LiveLine(Protocol):
    """A progress callback that draws on the terminal: its line is cleared before the run's
    closing words (a copy left unfinished, an interruption) are said."""

    def __call__(self, summary: Summary) -> None: ...

    def done(self) -> None: ...


@dataclass
class Summary:
    records: int = 0
    skipped: int = 0
    bytes_in: int = 0
    seconds: float = 0.0
    last_timestamp: int | None = None  # of the last message read (ms), for its age
    # What the run has to say beyond its counts (e.g. what --fill-missing filled): one line
    # each, shown even without --progress.
    notes: list[str] = field(default_factory=list)
    # --pace: the night time replayed so far (kcp.pacing.Pacer.night_clock)
    night_clock: Callable[[], str | None] | None = None

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        megabytes = self.bytes_in / 1e6
        text = (f"{self.count()}, {megabytes:,.1f} MB in {self.seconds:.2f} s "
                f"({rate:,.0f} records/s, {megabytes / max(self.seconds, 1e-9):.1f} MB/s)")
        if self.skipped:
            text += f"; {plural(self.skipped, 'bad record')} skipped"
        clock = self.night_clock() if self.night_clock is not None else None
        if clock is not None:
            text += f"; replayed up to {clock}"
        return text

    def count(self) -> str:
        """The records written, as the live line and the summary both say it."""
        return plural(self.records, "record")


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class Progress:
    """A live one-line count on stderr, redrawn at most five times a second, with the percent
    done and the time left when the source knows where its read ends (or -c N says)."""

    def __init__(self, stream: Any, source: Source, limit: int | None = None) -> None:
        self.stream = stream
        self.source = source
        self.limit = limit
        # Redrawing a line only makes sense on a terminal; a log gets the final summary only.
        self.live = stream.isatty()
        self.started = time.monotonic()
        self.next_draw = self.started + 0.2
        self.drawn = False

    def __call__(self, summary: Summary) -> None:
        now = time.monotonic()
        if now < self.next_draw or not self.live:
            return
        self.next_draw = now + 0.2
        elapsed = now - self.started
        clock = summary.night_clock() if summary.night_clock is not None else None
        fraction = self.source.done_fraction()
        if self.limit:  # -c N may end the read first
            fraction = max(fraction or 0.0, min(1.0, summary.records / self.limit))
        share = ""
        if fraction is not None:
            share = f", {fraction:.0%}"
            if fraction > 0:
                left = round(elapsed * (1 - fraction) / fraction)
                share += f", {left // 60}:{left % 60:02d} left"
        self.stream.write(f"\r\x1b[Kkcp: {summary.count()}, "
                          f"{(summary.bytes_in or self.source.bytes_read) / 1e6:,.1f} MB, "
                          f"{summary.records / elapsed:,.0f} records/s{share}"
                          + (f", night clock {clock}" if clock else ""))
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


class ErrorPolicy:
    """``--on-error fail|skip|dead-letter:PATH``."""

    def __init__(self, text: str) -> None:
        self.dead_letter = None
        if text.startswith("dead-letter:"):
            path = text.split(":", 1)[1]
            if not path:
                raise UsageError("--on-error dead-letter:PATH needs a path")
            self.dead_letter = open(path, "ab")
            self.mode = "dead-letter"
        elif text in ("fail", "skip"):
            self.mode = text
        else:
            raise UsageError("--on-error must be fail, skip or dead-letter:PATH")

    def handle(self, message: Message, error: BadInput) -> None:
        if self.mode == "fail":
            raise error
        if self.dead_letter is not None:
            record = {
                "where": error.where, "error": error.message, "topic": message.topic,
                "partition": message.partition, "offset": message.offset,
                "timestamp": message.timestamp, "source": message.source,
                "key": base64.b64encode(message.key).decode() if message.key else None,
                "value": base64.b64encode(message.value).decode() if message.value else None,
            }
            self.dead_letter.write(orjson.dumps(record) + b"\n")
            self.dead_letter.flush()

    def close(self) -> None:
        if self.dead_letter is not None:
            self.dead_letter.close()


class SignalGuard:
    """Ctrl-C and SIGTERM interrupt at once, except while a record is in hand: then the record
    is written and acknowledged first, so a signal never splits "written" from "committed".

    A sink may take no more (a pipe nobody reads: ``kcp consume T | sleep 60``), and a stop
    must not wait for it for ever: a second signal, or the first one still waiting
    ``GRACE_SECONDS`` later, interrupts the write.  That record is then not acknowledged, so a
    group reads it again next time: nothing is lost.  Closing the sink and committing at the
    end are held the same way, and after a stop by a signal they get ``GRACE_SECONDS`` too.
    """

    GRACE_SECONDS = 1.0

    def __init__(self) -> None:
        self.in_hand = False
        self.pending: type[BaseException] | None = None
        self._previous: dict[int, Any] = {}
        self._escalation: threading.Timer | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        interruption = KeyboardInterrupt if signum == signal.SIGINT else Terminated
        if self.in_hand and self.pending is None:
            self.pending = interruption
            self._escalate_after(self.GRACE_SECONDS, signum)
            return
        self._cancel_escalation()
        raise interruption()

    def _escalate_after(self, seconds: float, signum: int) -> None:
        """Signal the main thread again in ``seconds``: a blocked write returns (EINTR) and the
        handler, seeing a signal already waiting, raises."""
        if not self._previous:  # no handlers of ours (not the main thread): nothing to wake
            return
        timer = threading.Timer(seconds, signal.pthread_kill,
                                (threading.main_thread().ident, signum))
        timer.daemon = True
        timer.start()
        self._escalation = timer

    def _cancel_escalation(self) -> None:
        if self._escalation is not None:
            self._escalation.cancel()
            self._escalation = None

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._cancel_escalation()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def deliver_pending(self) -> None:
        """Deliver a signal that arrived while a record was in hand, before it is written
        (a record held back by --pace)."""
        if self.pending is not None:
            self._cancel_escalation()
            interruption, self.pending = self.pending, None
            raise interruption()

    def release(self) -> None:
        """The record in hand is done: deliver a signal that arrived meanwhile."""
        self.in_hand = False
        self._cancel_escalation()
        if self.pending is not None:
            raise self.pending()

    @contextlib.contextmanager
    def finishing(self, stopped_by: BaseException | None) -> Iterator[None]:
        """Hold signals while the sink is closed and offsets committed, as for a record in
        hand.  After a stop by a signal the closing gets ``GRACE_SECONDS``: a sink that takes
        nothing more is given up then (it keeps what it had; nothing more is committed)."""
        stopped_by_signal = isinstance(stopped_by, KeyboardInterrupt | Terminated)
        self.in_hand = True
        if stopped_by_signal:
            self.pending = type(stopped_by)
            self._escalate_after(self.GRACE_SECONDS, signal.SIGINT if isinstance(
                stopped_by, KeyboardInterrupt) else signal.SIGTERM)
        try:
            yield
        finally:
            self.in_hand = False
            self._cancel_escalation()
        if self.pending is not None and not stopped_by_signal:
            raise self.pending()


class Sources:
    """Several sources read one after the other, each message acknowledged to its own."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources
        self._current: Source | None = None

    def __iter__(self) -> Iterator[Message | None]:
        for source in self.sources:
            self._current = source
            yield from source

    def ack(self, message: Message) -> None:
        assert self._current is not None
        self._current.ack(message)

    @property
    def commits(self) -> bool:
        return any(source.commits for source in self.sources)

    @property
    def bytes_read(self) -> int:
        return sum(source.bytes_read for source in self.sources)

    def checkpoint(self) -> None:
        for source in self.sources:
            source.checkpoint()

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        for source in self.sources:
            source.flush_before_commit(flush)

    def partition_count(self, topic: str) -> int | None:
        return next((count for source in self.sources
                     if (count := source.partition_count(topic)) is not None), None)

    def done_fraction(self) -> float | None:
        """Each source read a like share of the whole."""
        if self._current is None:
            return 0.0
        current = self._current.done_fraction()
        if current is None:
            return None
        return (self.sources.index(self._current) + current) / len(self.sources)

    def close(self) -> None:
        for source in self.sources:
            source.close()


class CallbackSink:
    """A sink that hands each record to a function (``kcp schema`` and library users)."""

    traits = SinkTraits()

    def __init__(self, callback: Callable[[Message], None]) -> None:
        self.write = callback

    def copies_from(self, source: Source) -> None:
        pass

    def idle(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        pass


def stages_for(options: Options) -> list[Stage]:
    """The stages the options ask for: --save-schema, the time window, then --where, --map
    and --pipe-through in the order given, then --pace, then the --fields projection."""
    from .plugins import MapStage, PipeStage
    from .stages import (
        field_check_stage,
        fields_named,
        project_stage,
        time_window_stage,
        where_stage,
    )

    stages: list[Stage] = []
    if options.save_schema:
        from .schema_file import SchemaSaver

        stages.append(SchemaSaver(options.save_schema))  # as read, before any stage reshapes
    named = fields_named(options.steps, options.fields)
    if named:
        stages.append(field_check_stage(named, options.environment.stderr))
    if options.since or options.until:
        stages.append(time_window_stage(options.since, options.until))
    try:
        for kind, value in options.steps:
            if kind == "where":
                stages.append(where_stage(value))
            elif kind == "map":
                stages.append(MapStage(value, options, options.out_schema))
            else:
                stages.append(PipeStage(value, options, options.out_schema,
                                        options.pipe_timeout))
    except BaseException:
        close_stages(stages)
        raise
    if options.pace:
        from .pacing import Pacer

        # Last but --fields: records are held back only once kept, and by their own time.
        stages.append(Pacer(options.pace))
    if options.fields:
        stages.append(project_stage(options.fields))
    return stages


def close_stages(stages: Iterable[Stage]) -> None:
    for stage in stages:
        if isinstance(stage, ClosingStage):
            stage.close()


def run(source: Source, sink: Sink, options: Options, decoder: Reader | None = None,
        stages: Iterable[Stage] = (), progress: Callable[[Summary], None] | None = None,
        workers: Workers | None = None, summary: Summary | None = None,
        consumer_processes: bool = False) -> Summary:
    """Move every record of ``source`` to ``sink``; ``decoder`` decodes raw payloads if given.

    A source may yield ``None`` to say it is idle: buffered output is pushed out then.
    ``workers`` (kcp.parallel.Workers) decode, filter and encode in other processes.
    ``summary`` is counted into (the caller's, to say what a stopped run wrote).
    ``consumer_processes``: the source is ``-j``'s consumer processes (kcp.group), which write
    to the sink themselves; it yields what they wrote.
    """
    stages = list(stages)
    policy = ErrorPolicy(options.on_error)
    summary = summary if summary is not None else Summary()
    limit = options.count
    started = time.monotonic()
    completed = False
    source.flush_before_commit(sink.flush)
    guard = SignalGuard()
    pacer = pacer_in(stages)
    if pacer is not None:
        pacer.on_wait = functools.partial(_while_paced, sink, progress, summary, guard)
        summary.night_clock = pacer.night_clock
    with guard:
        try:
            if consumer_processes:
                completed = _reports_loop(source, sink, summary, limit, progress, guard)
            elif workers is not None:
                completed = _parallel_loop(source, sink, workers, policy, summary, limit,
                                           progress, guard)
            else:
                completed = _loop(source, sink, decoder, stages, policy, summary, limit,
                                  progress, guard)
        finally:
            summary.bytes_in = summary.bytes_in or source.bytes_read
            summary.notes.extend(_notes(options))
            policy.close()
            close_stages(stages)
            if isinstance(progress, LiveLine):
                progress.done()
            stopped_by = sys.exc_info()[1]
            # A copy that ends at bad input under --on-error fail is the input up to its
            # damage: finished.  One stopped by a signal or a failure is not, and its file
            # keeps ".part".
            with guard.finishing(stopped_by):
                _finish(source, sink, completed=completed or isinstance(stopped_by, BadInput),
                        commit=completed or not isinstance(stopped_by, BrokenPipeError))
            # the time until the sink holds everything (a producer's last deliveries included)
            summary.seconds = time.monotonic() - started
    return summary


def _while_paced(sink: Any, progress: Any, summary: Summary, guard: SignalGuard) -> None:
    """While --pace holds a record back: what was written goes out, the night clock shows,
    and Ctrl-C stops the replay at once."""
    sink.idle()
    if progress is not None:
        progress(summary)
    guard.deliver_pending()


def _notes(options: Options) -> list[str]:
    from .codec.schemas import FilledSchema

    reader = options.schemas.reader
    note = reader.report() if isinstance(reader, FilledSchema) else None
    return [note] if note else []


class _Rhythm:
    """Pushes output out when the source idles, and checkpoints about once a second."""

    def __init__(self, source: Source, sink: Sink, progress: Callable[[Summary], None] | None,
                 summary: Summary) -> None:
        self.source, self.sink, self.progress, self.summary = source, sink, progress, summary
        self.last_checkpoint = time.monotonic()

    def idle(self) -> None:
        self.sink.idle()
        if self.progress is not None:
            self.progress(self.summary)
        self.checkpoint_if_due()

    def handled(self, item: Any, guard: SignalGuard, limit: int | None) -> bool:
        """``item`` is written: acknowledged to the source (committed after the write), the
        signal guard released, progress drawn; True once --count is reached."""
        self.source.ack(item)
        guard.release()
        if self.progress is not None:
            self.progress(self.summary)
        return limit is not None and self.summary.records >= limit

    def checkpoint_if_due(self) -> None:
        if time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
            _checkpoint(self.sink, self.source)
            self.last_checkpoint = time.monotonic()


def _loop(source: Source, sink: Sink, decoder: Reader | None, stages: list[Stage],
          policy: ErrorPolicy, summary: Summary, limit: int | None,
          progress: Callable[[Summary], None] | None, guard: SignalGuard) -> bool:
    rhythm = _Rhythm(source, sink, progress, summary)
    for message in source:
        if message is None:
            rhythm.idle()
            continue
        guard.in_hand = True
        summary.last_timestamp = message.timestamp
        if message.value is not None:
            summary.bytes_in += len(message.value)
        try:
            if message.error is not None:
                raise message.error
            decoded = (decoder.decode(message) if decoder is not None and not message.decoded
                       else (message,))
            for record in (out for each in decoded for out in apply(stages, each)):
                sink.write(record)
                summary.records += 1
                if limit is not None and summary.records >= limit:
                    break
        except BadInput as error:
            error.at(message.where())
            policy.handle(message, error)
            summary.skipped += 1
        if rhythm.handled(message, guard, limit):
            break
        rhythm.checkpoint_if_due()
    return True


def _parallel_loop(source: Source, sink: Sink, workers: Workers, policy: ErrorPolicy,
                   summary: Summary, limit: int | None,
                   progress: Callable[[Summary], None] | None, guard: SignalGuard) -> bool:
    """The loop of ``_loop`` with decoding, stages and encoding done by ``workers``."""
    from .parallel import BATCH

    rhythm = _Rhythm(source, sink, progress, summary)
    batch: list[Message] = []

    def write_finished(wait_all: bool) -> bool:
        """Write what the workers finished; True once --count is reached."""
        for message, (outputs, problem) in workers.results(wait_all):
            guard.in_hand = True
            if problem is not None:
                policy.handle(message, BadInput(problem).at(message.where()))
                summary.skipped += 1
            else:
                for output in outputs:
                    try:
                        workers.write(sink, message, output)
                    except BadInput as error:  # the sink refused a record (a schema mismatch)
                        policy.handle(message, error.at(message.where()))
                        summary.skipped += 1
                        break
                    summary.records += 1
                    if limit is not None and summary.records >= limit:
                        break
            if rhythm.handled(message, guard, limit):
                return True
        return False

    try:
        for message in source:
            if message is not None:
                summary.last_timestamp = message.timestamp
                if message.value is not None:
                    summary.bytes_in += len(message.value)
                if message.error is not None or message.decoded:
                    raise UsageError("-j reads payloads (Kafka, raw, stdin): drop -j for files")
                batch.append(message)
                if len(batch) < BATCH:
                    continue
            if batch:
                workers.submit(batch)
                batch = []
            if write_finished(wait_all=message is None):
                return True
            if message is None:
                rhythm.idle()
            else:
                rhythm.checkpoint_if_due()
        if batch:
            workers.submit(batch)
        write_finished(wait_all=True)
        return True
    finally:
        workers.close()


def _reports_loop(source: Any, sink: Any, summary: Summary, limit: int | None,
                  progress: Callable[[Summary], None] | None, guard: SignalGuard) -> bool:
    """The loop of ``_loop`` for ``-j`` consumer processes (kcp.group), which write the output
    and commit themselves: what they report is counted, until --count."""
    rhythm = _Rhythm(source, sink, progress, summary)
    try:
        for written in source:
            if written is None:
                rhythm.idle()
                continue
            summary.records += written.records
            summary.bytes_in += written.bytes_in
            summary.skipped += written.skipped
            summary.last_timestamp = written.last_timestamp or summary.last_timestamp
            if rhythm.handled(written, guard, limit):
                break
            rhythm.checkpoint_if_due()
    finally:
        source.stop_writing()  # before the sink is closed
    return True


def _checkpoint(sink: Sink, source: Source) -> None:
    # Making the sink durable matters only when a position is committed after it: a source
    # that commits nothing (no group, files) restarts from its beginning anyway, and a
    # producer flush every second would throttle the copy for nothing.
    if source.commits:
        sink.flush()
        source.checkpoint()
    else:
        sink.idle()


def _finish(source: Source, sink: Sink, completed: bool, commit: bool) -> None:
    """Keep everything already written (even after an error), then commit, then close."""
    try:
        try:
            sink.close(complete=completed)
            # Closing the consumer below may rebalance: nothing is left to flush by then.
            source.flush_before_commit(None)
            if commit:
                source.checkpoint()
        finally:
            source.close()
    except BrokenPipeError:
        pass
