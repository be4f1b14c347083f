"""GCN's classic text notices: ``KEY: value`` lines with RFC-822-style continuation lines.

A notice such as::

    TITLE:            GCN/SWIFT NOTICE
    NOTICE_TYPE:      Swift-BAT GRB Position
    GRB_RA:           123.4567d {+08h 13m 49.6s} (J2000),
                      123.5000d {+08h 14m 00.0s} (current),
    COMMENTS:         SWIFT-BAT GRB Coordinates.
    COMMENTS:         This is a rate trigger.

reads as one JSON object of its fields, in their order, values as the text they are (no unit or
type is guessed): a continuation line (one starting with white space) joins its field's value
after a newline, and a key that repeats (``COMMENTS``) holds the list of its values.  Writing
turns such an object back into a notice, so ``--from gcn-text`` and ``--to gcn-text`` round-trip.
A Kafka message is one notice; in a file or on stdin notices are separated by blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import BadInput
from ..message import Message
from ..options import Options
from .lines import LineStreamWriter, cut_after_last_line, decoded

_FIELD = re.compile(r"([A-Z][A-Z0-9_]*):(.*)")
VALUE_COLUMN = 18  # where GCN's notices start their values


def parse_notice(text: str) -> dict[str, Any]:
    """The fields of one notice (see the module's docstring)."""
    fields: dict[str, Any] = {}
    last: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line[0] in " \t":
            if last is None:
                raise BadInput(f"line {number}: a continuation line before any field")
            value = fields[last]
            if isinstance(value, list):
                value[-1] = f"{value[-1]}\n{line.strip()}"
            else:
                fields[last] = f"{value}\n{line.strip()}"
            continue
        found = _FIELD.fullmatch(line.rstrip())
        if found is None:
            raise BadInput(f"line {number} is not 'KEY: value' ({line[:40]!r}): not a GCN text "
                           "notice")
        key, value = found[1], found[2].strip()
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
        last = key
    if not fields:
        raise BadInput("an empty GCN text notice")
    return fields


def write_notice(fields: Any) -> bytes:
    """A notice from a record of its fields (a value may be a list: the key repeats)."""
    if not isinstance(fields, dict):
        raise BadInput("a GCN text notice is written from a record of KEY: value fields")
    lines = []
    for key, values in fields.items():
        if not _FIELD.fullmatch(f"{key}:"):
            raise BadInput(f"field {key!r} cannot be a GCN notice key (A-Z, 0-9, _)")
        for value in values if isinstance(values, list) else [values]:
            first, *more = ("" if value is None else str(value)).split("\n")
            lines.append(f"{key}:".ljust(VALUE_COLUMN) + first)
            lines += [" " * VALUE_COLUMN + line for line in more]
    return ("\n".join(lines) + "\n").encode()


class GcnTextReader:
    def __init__(self, options: Options) -> None:
        self.limit = options.limits.max_line_bytes

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a GCN text notice was expected")
        try:
            text = message.value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"not UTF-8 text at byte {exc.start}: not a GCN text notice") from None
        message.datum = parse_notice(text)
        message.schema = None
        message.decoded = True
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        """Notices separated by blank lines; one over --max-line-size bytes is bad input (read
        past, not kept)."""
        notice: list[bytes] = []
        size = start = 0
        for number, line in enumerate(stream, 1):
            if line.strip():
                if not notice and not size:
                    start = number
                size += len(line)
                if size <= self.limit:
                    notice.append(line)
                continue
            if size:
                yield self._notice(notice, size, source, start)
                notice, size = [], 0
        if size:
            yield self._notice(notice, size, source, start)

    def _notice(self, lines: list[bytes], size: int, source: str, start: int) -> Message:
        message = Message(value=b"".join(lines), source=source, position=f"line {start}")
        if size > self.limit:
            message.value = None
            message.error = BadInput(f"a notice longer than --max-line-size "
                                     f"{self.limit >> 20} MB").at(message.where())
            return message
        return next(decoded(self.decode, message, message.where()))


class GcnTextWriter:
    def __init__(self, options: Options) -> None:
        pass

    def encode(self, message: Message) -> bytes:
        return write_notice(message.datum)

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream, b"\n\n")

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        # A blank line after each notice: what read_stream splits them at.
        return LineStreamWriter(stream, self.encode)
