"""What the file, stdio and tar transports share: sources with nothing to commit, files named by
a path or glob, and a sink writing one format into a byte stream."""

from __future__ import annotations

import errno
import glob
import os
import select
import stat
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from ..address import Address
from ..contracts import RecordStreamWriter, SinkTraits, Writer
from ..errors import UsageError
from ..message import Message
from ..options import Options


class QuietSource:
    """A source with nothing to commit (files, pipes): acknowledging is a no-op."""

    commits = False
    bytes_read = 0

    def ack(self, message: Message) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def flush_before_commit(self, flush: Callable[[], None] | None) -> None:
        pass

    def partition_count(self, topic: str) -> int | None:
        return None

    def done_fraction(self) -> float | None:
        return None

    def close(self) -> None:
        pass


def expand(pattern: str) -> list[str]:
    path = os.path.expanduser(pattern)
    if any(c in path for c in "*?["):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise UsageError(f"{pattern}: no file matches")
        return matches
    if not os.path.exists(path):
        raise UsageError(f"{pattern}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{pattern}: is a folder; give a glob such as '{pattern}/*.avro'")
    return [path]


class PathSource(QuietSource):
    """Files named by a path or a glob, read one after the other by ``read_file``."""

    def __init__(self, address: Address, options: Options) -> None:
        if options.offset is not None or options.partitions:
            raise UsageError(f"{address}: -o/--offset and -p/--partition choose Kafka "
                             "positions; a file is read from its start (use -c to stop early)")
        self.paths = expand(address.path or address.text)
        self.name = address.text
        self.options = options
        self._total = sum(os.path.getsize(path) for path in self.paths)
        self._reading: BinaryIO | None = None
        self._finished = 0  # the bytes of the files read to their end

    def __iter__(self) -> Iterator[Message]:
        for path in self.paths:
            try:
                stream = open(path, "rb")
            except OSError as exc:
                raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
            size = os.fstat(stream.fileno()).st_size
            self._reading = stream
            read = 0  # of the file, when left before its end (-c)
            try:
                yield from self.read_file(stream, path)
                read = size
            finally:
                self._finished += read or (size if stream.closed else stream.tell())
                self._reading = None
                stream.close()

    @property
    def bytes_read(self) -> int:  # type: ignore[override]
        """The bytes of the files read so far."""
        reading = self._reading
        return self._finished + (0 if reading is None or reading.closed else reading.tell())

    def done_fraction(self) -> float | None:
        """The bytes of the files read so far, of them all."""
        return min(1.0, self.bytes_read / self._total) if self._total else None

    def read_file(self, stream: BinaryIO, path: str) -> Iterator[Message]:
        raise NotImplementedError


def _pipe_descriptor(stream: BinaryIO) -> int | None:
    """The descriptor of ``stream`` when it is a pipe or FIFO, whose reader may go away."""
    try:
        descriptor = stream.fileno()
        return descriptor if stat.S_ISFIFO(os.fstat(descriptor).st_mode) else None
    except (OSError, ValueError):  # not a file (BytesIO), or closed
        return None


class StreamSink:
    """Writes messages to a byte stream in one format."""

    def __init__(self, stream: BinaryIO, writer: Writer, name: str) -> None:
        self.name = name
        self.stream = stream
        # A pipe's reader may leave while we wait for records (`kcp tail T | head -1`): we
        # notice when idle, rather than at the next record, which may be hours away.
        self._pipe = _pipe_descriptor(stream)
        self.format_writer = writer
        self.writer = writer.open_stream(stream)
        self.traits = SinkTraits(encodes_alone=self.writer.encodes_alone)

    def write(self, message: Message) -> None:
        self.writer.write(message)

    def encode(self, message: Message) -> bytes:
        return self.format_writer.encode(message)

    def write_encoded(self, message: Message, data: bytes) -> None:
        cast(RecordStreamWriter, self.writer).write_encoded(data)

    def copies_from(self, source: object) -> None:
        pass

    def idle(self) -> None:
        self.stream.flush()
        if self._pipe is not None:
            watch = select.poll()
            watch.register(self._pipe, 0)  # POLLERR: the read end is closed
            if watch.poll(0):
                raise BrokenPipeError(errno.EPIPE, "the reader of the pipe has gone")

    def flush(self) -> None:
        self.writer.flush()

    def close(self, complete: bool = True) -> None:
        self.writer.close()
