"""stdin and stdout (the address ``-``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from ..address import Address
from ..config import Config
from ..formats import format_named
from ..message import Message
from ..options import Options
from .stream import QuietSource, StreamSink, read_messages


class StdinSource(QuietSource):
    name = "<stdin>"

    def __init__(self, options: Options) -> None:
        self.options = options

    def __iter__(self) -> Iterator[Message]:
        return read_messages(sys.stdin.buffer, self.name, None, self.options)


def open_source(address: Address, options: Options, config: Config) -> StdinSource:
    return StdinSource(options)


def open_sink(address: Address, options: Options, config: Config) -> StreamSink:
    fmt = format_named(options.write_format or "json")
    return StreamSink(sys.stdout.buffer, fmt, options, "<stdout>")
