"""What the line-based formats (JSON Lines, envelopes, raw payloads) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from ..message import Message


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


class LineStreamWriter:
    """Records one after the other, each encoded by its format and followed by a separator."""

    def __init__(self, stream: BinaryIO, encode: Callable[[Message], bytes],
                 separator: bytes = b"\n") -> None:
        self.stream = stream
        self.encode = encode
        self.separator = separator

    def write(self, message: Message) -> None:
        self.write_encoded(self.encode(message))

    def write_encoded(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.write(self.separator)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
