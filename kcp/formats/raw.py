"""Payloads passed through untouched: what `kcp consume --raw` writes and kcat-style input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ..message import Message
from ..options import Options
from .lines import LineStreamWriter, cut_after_last_line


class RawReader:
    def __init__(self, options: Options) -> None:
        self.delimiter = options.delimiter

    def decode(self, message: Message) -> list[Message]:
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        if not self.delimiter:
            yield Message(value=stream.read(), source=source, position="payload 1")
            return
        pending = b""
        number = 0
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            pending += chunk
            *payloads, pending = pending.split(self.delimiter)
            for payload in payloads:
                number += 1
                yield Message(value=payload, source=source, position=f"payload {number}")
        if pending:
            yield Message(value=pending, source=source, position=f"payload {number + 1}")


class RawWriter:
    def __init__(self, options: Options) -> None:
        self.delimiter = options.delimiter

    def encode(self, message: Message) -> bytes:
        return message.value or b""

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream, self.delimiter)

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        return LineStreamWriter(stream, self.encode, self.delimiter)
