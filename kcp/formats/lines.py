"""What the line-based formats (JSON Lines, envelopes, raw payloads) share."""

from __future__ import annotations

from typing import BinaryIO


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
