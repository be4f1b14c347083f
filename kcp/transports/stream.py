"""What the file and stdio transports share: reading a stream in its format, writing one."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import BadInput
from ..formats import Format, format_named, sniff_format
from ..message import Message
from ..options import Options

GZIP_MAGIC = b"\x1f\x8b"


def peekable(stream: BinaryIO) -> BinaryIO:
    """``stream`` able to show its first bytes without consuming them (formats are sniffed)."""
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore


def peek(stream: BinaryIO, size: int) -> bytes:
    return stream.peek(size)[:size]


def read_messages(stream: BinaryIO, name: str, fmt: Format | None, options: Options
                  ) -> Iterator[Message]:
    """Messages of one stream, gunzipping it transparently and sniffing its format if unknown;
    a tar archive (ZTF's nightly ones: ``kcp convert < night.tar.gz``) is read member by member."""
    from .tar import looks_like_tar, read_archive  # not above: tar imports file, which imports us

    stream = peekable(stream)
    if looks_like_tar(stream):
        yield from read_archive(stream, name, options)
        return
    if peek(stream, 2) == GZIP_MAGIC:
        stream = peekable(gzip.GzipFile(fileobj=stream))  # type: ignore[arg-type]
    if options.read_format:
        fmt = format_named(options.read_format)
    fmt = fmt or sniff_format(peek(stream, 64))
    last = None
    try:
        for message in fmt.reader(options).read_stream(stream, name):
            last = message.position
            yield message
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a damaged or cut .gz
        where = f"{name}:after {last}" if last else name
        error = BadInput(f"corrupt or truncated gzip data ({exc or type(exc).__name__})")
        yield Message(source=name, position=f"after {last}" if last else None,
                      error=error.at(where))


class QuietSource:
    """A source with nothing to commit (files, pipes): acknowledging is a no-op."""

    def ack(self, message: Message) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def close(self) -> None:
        pass


class StreamSink:
    """Writes messages to a byte stream in one format."""

    payloads = False

    def __init__(self, stream: BinaryIO, fmt: Format, options: Options, name: str) -> None:
        self.name = name
        self.stream = stream
        self.writer = fmt.writer(options).open_stream(stream)
        # Set when records can be encoded one by one elsewhere (-j workers) and written here.
        self.encode = getattr(self.writer, "encode", None)

    def write(self, message: Message) -> None:
        self.writer.write(message)

    def write_encoded(self, message: Message, data: bytes) -> None:
        self.writer.write_encoded(data)

    def idle(self) -> None:
        self.stream.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
