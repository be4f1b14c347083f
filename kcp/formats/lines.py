"""What the formats share for reading and writing streams: lines, whole-file payloads."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import BadInput
from ..message import Message


class Text(str):
    """A payload that is plain text (a GCN classic notice), decoded to be shown as it is."""


# Control characters text does not hold (tab, newline, form feed and carriage return it may)
_NOT_TEXT = frozenset(range(32)) - {9, 10, 12, 13} | {127}


def as_text(payload: bytes) -> Text | None:
    """``payload`` as text when it is UTF-8 without control characters, else None."""
    if not payload or not _NOT_TEXT.isdisjoint(payload):
        return None
    try:
        return Text(payload.decode())
    except UnicodeDecodeError:
        return None


def cut_after_last_line(stream: BinaryIO, delimiter: bytes = b"\n") -> None:
    """Truncate a line-based file after its last complete line (a crashed writer's leftovers)."""
    end = stream.seek(0, 2)
    position = end
    while position > 0:
        start = max(0, position - (1 << 16))
        stream.seek(start)
        found = stream.read(position - start).rfind(delimiter)
        if found >= 0:
            end = start + found + len(delimiter)
            break
        position = start
    else:
        end = 0
    stream.truncate(end)
    stream.seek(end)


def write_all(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data``: an unbuffered stream (stdout under PYTHONUNBUFFERED=1) writes
    only part of it when a signal interrupts the write, and says so only by its count."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if written is None:  # a non-blocking stream that is full: as a blocking one would
            select.select([], [stream], [])
            continue
        view = view[written:]


class LineStreamWriter:
    """Records one after the other, each encoded by its format and followed by a separator."""

    encodes_alone = True

    def __init__(self, stream: BinaryIO, encode: Callable[[Message], bytes],
                 separator: bytes = b"\n") -> None:
        self.stream = stream
        self.encode = encode
        self.separator = separator

    def write(self, message: Message) -> None:
        self.write_encoded(self.encode(message))

    def write_encoded(self, data: bytes) -> None:
        write_all(self.stream, data)
        write_all(self.stream, self.separator)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


Decode = Callable[[Message], list[Message]]


def decoded(decode: Decode, message: Message, where: str) -> Iterator[Message]:
    """The records a message decodes to, or the message carrying its error (--on-error)."""
    try:
        yield from decode(message)
    except BadInput as exc:
        message.error = exc.at(where)
        yield message


def _too_long(limit: int) -> BadInput:
    return BadInput(f"longer than --max-line-size {limit >> 20} MB")


def read_lines(decode: Decode, stream: BinaryIO, source: str, limit: int) -> Iterator[Message]:
    """One message per non-blank line of ``stream``, decoded; a line over ``limit`` bytes is
    bad input (it is read past, not kept)."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        message = Message(value=line, source=source, position=f"line {number}")
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            message.value = None
            message.error = _too_long(limit).at(message.where())
            yield message
        elif line.strip():
            yield from decoded(decode, message, message.where())


def read_whole(decode: Decode, stream: BinaryIO, source: str, limit: int) -> Iterator[Message]:
    """The whole of ``stream`` as one payload, decoded; over ``limit`` bytes it is bad input."""
    payload = stream.read(limit + 1)
    if len(payload) > limit:
        yield Message(source=source, error=_too_long(limit).at(source))
        return
    yield from decoded(decode, Message(value=payload, source=source), source)
