"""stdin and stdout (the address ``-``), as the run's Environment gives them."""

from __future__ import annotations

from collections.abc import Iterator

from ..address import Address
from ..config import Config
from ..errors import UsageError
from ..formats import format_named
from ..message import Message
from ..options import Options
from .file import read_messages
from .stream import QuietSource, StreamSink


class StdinSource(QuietSource):
    name = "<stdin>"

    def __init__(self, options: Options) -> None:
        if options.offset is not None or options.partitions:
            raise UsageError("-: -o/--offset and -p/--partition choose Kafka positions; stdin "
                             "is read from its start (use -c to stop early)")
        self.options = options

    def __iter__(self) -> Iterator[Message]:
        return read_messages(self.options.environment.stdin, self.name, None, self.options)


def open_source(address: Address, options: Options, config: Config) -> StdinSource:
    return StdinSource(options)


def open_sink(address: Address, options: Options, config: Config) -> StreamSink:
    writer = format_named(options.write_format or "json").writer(options)
    return StreamSink(options.environment.stdout, writer, "<stdout>")
