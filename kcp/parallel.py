"""``-j N``: decode, filter and encode records in N worker processes, output order kept.

The main process reads the source, sends batches of raw messages to the workers, and writes
their encoded results in the order the batches were sent, acknowledging each message after its
output is written, so delivery guarantees and ``--count`` are exactly those of one process.
Workers are forked from the main process and inherit the reader, stages and encoder; they run
only Python decoding and never call into the Kafka client whose threads the fork leaves behind.
They ignore Ctrl-C, which the main process handles.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .errors import BadInput, UsageError
from .message import Message
from .pacing import pacer_in
from .stages import apply

BATCH = 32
_work: tuple[Any, list[Callable[[Message], Message | None]], Callable[[Message], bytes]] | None
_work = None

Fields = tuple[Any, ...]
Outcome = tuple[list[bytes] | None, str | None]


def _fields(message: Message) -> Fields:
    return (message.value, message.key, message.headers, message.topic, message.partition,
            message.offset, message.timestamp, message.source, message.position)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process(batch: list[Fields]) -> list[Outcome]:
    """In a worker: each message's encoded records, or the reason it is bad."""
    assert _work is not None
    reader, stages, encode = _work
    outcomes: list[Outcome] = []
    for fields in batch:
        try:
            encoded = [encode(record) for decoded in reader.decode(Message(*fields))
                       for record in apply(stages, decoded)]
            outcomes.append((encoded, None))
        except BadInput as error:
            outcomes.append((None, error.message))
    return outcomes


class Workers:
    """A pool of forked workers running ``reader -> stages -> encode`` on batches."""

    def __init__(self, jobs: int, reader: Any, stages: list, encode: Callable | None) -> None:
        if any(hasattr(stage, "process") for stage in stages):
            raise UsageError("--pipe-through runs one program: drop -j (let the program "
                             "use several cores)")
        if pacer_in(stages) is not None:
            raise UsageError("--pace releases records one at a time, in order: drop -j")
        if encode is None:
            raise UsageError("-j needs a destination written record by record (JSON Lines, "
                             "envelopes, raw payloads, Kafka), not an Avro container file")
        global _work
        _work = (reader, stages, encode)
        self.jobs = jobs
        self.pool = multiprocessing.get_context("fork").Pool(jobs, _ignore_interrupts)
        self.in_flight: deque[tuple[list[Message], Any]] = deque()

    def submit(self, batch: list[Message]) -> None:
        self.in_flight.append((batch, self.pool.apply_async(_process, ([_fields(m)
                                                                        for m in batch],))))

    def results(self, wait_all: bool = False) -> Iterator[tuple[Message, Outcome]]:
        """Finished results in submission order; blocks while too many batches are out."""
        while self.in_flight and (wait_all or len(self.in_flight) > 2 * self.jobs
                                  or self.in_flight[0][1].ready()):
            batch, pending = self.in_flight.popleft()
            yield from zip(batch, pending.get(), strict=True)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
