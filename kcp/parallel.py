"""``-j N``: decode, filter and encode records in N worker processes, output order kept.

The main process reads the source, sends batches of raw messages to the workers, and writes
their results in the order the batches were sent, acknowledging each message after its output is
written, so delivery guarantees and ``--count`` are exactly those of one process.  A worker
returns each record's bytes when the sink's records are encoded alone (JSON Lines, VOEvent,
Kafka payloads); otherwise (an Avro container file, a tar archive) it returns the decoded
records, which the main process writes.  Workers are forked from the main process and inherit
the reader, stages and encoder; they run only Python decoding and never call into the Kafka
client whose threads the fork leaves behind.  They ignore Ctrl-C, which the main process handles.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .codec import SchemaStore
from .contracts import Encode, Reader, Sink
from .errors import BadInput, KcpError, UsageError
from .message import Message
from .pacing import pacer_in
from .plugins import PipeStage
from .stages import apply

BATCH = 32
_work: tuple[Reader, list[Callable[[Message], Any]], Encode | None] | None = None

Fields = tuple[Any, ...]
# A decoded record as a worker hands it back: its datum, its schema's text (or None), its
# place among its message's records (Message.record), and whether the message's payload is
# still its own (not when it is one of several records, or what a --map made of it).
Decoded = tuple[Any, str | None, str | None, bool]
Outcome = tuple[list[bytes] | list[Decoded] | None, str | None]


def _fields(message: Message) -> Fields:
    return (message.value, message.key, message.headers, message.topic, message.partition,
            message.offset, message.timestamp, message.source, message.position)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process(batch: list[Fields]) -> list[Outcome]:
    """In a worker: each message's encoded (or decoded) records, or the reason it is bad."""
    assert _work is not None
    reader, stages, encode = _work
    outcomes: list[Outcome] = []
    for fields in batch:
        try:
            records = [record for decoded in reader.decode(Message(*fields))
                       for record in apply(stages, decoded)]
            if encode is not None:
                outcomes.append(([encode(record) for record in records], None))
            else:
                outcomes.append(([(r.datum, r.schema.text if r.schema else None, r.record,
                                   r.value is not None) for r in records], None))
        except BadInput as error:
            outcomes.append((None, error.message))
        except RecursionError:  # a Python-level walk of a hostile record, as in one process
            outcomes.append((None, "record nested too deeply to decode"))
    return outcomes


class Workers:
    """A pool of forked workers running ``reader -> stages [-> encode]`` on batches."""

    def __init__(self, jobs: int, reader: Reader, stages: list, sink: Sink,
                 schemas: SchemaStore) -> None:
        if any(isinstance(stage, PipeStage) for stage in stages):
            raise UsageError("--pipe-through runs one program: drop -j (let the program "
                             "use several cores)")
        if pacer_in(stages) is not None:
            raise UsageError("--pace releases records one at a time, in order: drop -j")
        self.encodes = sink.traits.encodes_alone
        self.schemas = schemas
        global _work
        _work = (reader, stages, sink.encode if self.encodes else None)
        self.jobs = jobs
        # An executor, not multiprocessing.Pool: when a worker dies the Pool replaces it and
        # the batch it held never finishes (the run hangs); the executor says so.
        self.pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("fork"),
                                        initializer=_ignore_interrupts)
        self.in_flight: deque[tuple[list[Message], Future]] = deque()

    def submit(self, batch: list[Message]) -> None:
        self.in_flight.append((batch, self.pool.submit(_process, [_fields(m) for m in batch])))

    def results(self, wait_all: bool = False) -> Iterator[tuple[Message, Outcome]]:
        """Finished results in submission order; blocks while too many batches are out."""
        while self.in_flight and (wait_all or len(self.in_flight) > 2 * self.jobs
                                  or self.in_flight[0][1].done()):
            batch, pending = self.in_flight.popleft()
            try:
                outcomes = pending.result()
            except BrokenProcessPool:
                raise KcpError(f"a -j worker died decoding the batch from {batch[0].where()}; "
                               "run it without -j to find the record") from None
            yield from zip(batch, outcomes, strict=True)

    def write(self, sink: Sink, message: Message, output: bytes | Decoded) -> None:
        """Write one of a message's results to the sink."""
        if self.encodes:
            sink.write_encoded(message, output)  # type: ignore[arg-type]
            return
        datum, schema_text, record, own_payload = output  # type: ignore[misc]
        schema = None if schema_text is None else self.schemas.from_header_text(
            schema_text.encode())
        fields = _fields(message)
        if not own_payload:
            fields = (None, *fields[1:])
        sink.write(Message(*fields, datum=datum, schema=schema, decoded=True, record=record))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
