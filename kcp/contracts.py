"""The contracts between the stages of a run, as typing Protocols.

A run is ``Source -> Reader.decode -> stages -> Sink``.  Sources and sinks come from a transport
(kcp.transports), readers and writers from a format (kcp.formats).  What one side may ask of
another is declared here, capabilities included, so no stage probes another with ``hasattr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from .message import Message

Encode = Callable[[Message], bytes]


class Source(Protocol):
    """Messages from a topic, files or stdin.  Iterating yields ``None`` when the source is idle
    (nothing new for now): the pipeline pushes buffered output out then."""

    #: True when ``checkpoint`` makes positions durable (a Kafka consumer group): only then
    #: does the sink have to be made durable before each checkpoint.
    commits: bool
    #: Bytes read so far, for the summary of sources whose messages carry no payload (files).
    bytes_read: int

    def __iter__(self) -> Iterator[Message | None]: ...

    def ack(self, message: Message) -> None:
        """``message`` is handled: written, skipped or dead-lettered."""

    def checkpoint(self) -> None:
        """Make the acknowledgements durable (Kafka: commit offsets)."""

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        """The sink's flush, to call before committing outside the pipeline's loop (a
        rebalance); ``None`` once the sink is closed."""

    def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has, for a mirror copying it (None: not Kafka)."""

    def done_fraction(self) -> float | None:
        """How much of a read that ends is done, 0 to 1 (Kafka: offsets up to the end ones of
        the start; files: bytes), for the live progress; None when unknown (following, stdin)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkTraits:
    """What a sink can do, declared once by its transport."""

    #: Writes each record as one payload (Kafka), rather than into a byte stream.
    payloads: bool = False
    #: A record's bytes depend on that record alone, so ``-j`` workers may encode it and the
    #: sink takes the result with ``write_encoded``.  Otherwise workers hand decoded records.
    encodes_alone: bool = False


class Sink(Protocol):
    traits: SinkTraits

    def write(self, message: Message) -> None: ...

    def encode(self, message: Message) -> bytes:
        """The bytes ``write_encoded`` takes for ``message`` (when ``traits.encodes_alone``)."""

    def write_encoded(self, message: Message, data: bytes) -> None: ...

    def copies_from(self, source: Source) -> None:
        """Told where records come from before the run (a mirror copies partition counts)."""

    def idle(self) -> None:
        """Push buffered output out: the source has nothing new for now."""

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self, complete: bool = True) -> None:
        """Finish the output.  ``complete`` is False after an error or an interruption: a file
        then keeps its ``.part`` name, so nobody takes it for a finished copy."""


class Reader(Protocol):
    """One format's reading side: payloads into records, streams into messages."""

    def decode(self, message: Message) -> list[Message]: ...

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]: ...


class StreamWriter(Protocol):
    """Records written one after the other into a byte stream that is never seeked (a pipe)."""

    #: Each record's bytes are the format writer's ``encode`` of it alone, so they may be made
    #: elsewhere (-j workers) and handed to ``write_encoded`` (a RecordStreamWriter).
    encodes_alone: bool

    def write(self, message: Message) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class RecordStreamWriter(StreamWriter, Protocol):
    """A stream writer whose records are encoded alone (``encodes_alone`` is True)."""

    def write_encoded(self, data: bytes) -> None: ...


class Writer(Protocol):
    """One format's writing side: a record into one payload, or into a stream."""

    def encode(self, message: Message) -> bytes: ...

    def recover(self, stream: BinaryIO) -> None:
        """Prepare a file a crashed run left for continuing: cut its torn tail and learn what
        the rest holds.  Only files are recovered, so this may seek."""

    def open_stream(self, stream: BinaryIO) -> StreamWriter: ...
