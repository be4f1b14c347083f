"""Files and globs of files, and reading any byte stream in its format.

A file being written goes to ``NAME.part`` beside its final name and takes the final name only
when the run completes: after an error, Ctrl-C or SIGTERM it stays ``NAME.part`` (what was written
is kept, and a rerun with the same consumer group continues it), so a torn or partial copy never
sits under the final name.  Data is flushed and fsynced at every checkpoint, before the source
commits.

When the source resumes (a consumer group), so does the file: a rerun continues ``NAME.part``
(or the finished ``NAME``), first cutting the torn tail a crash may have left, so the records
whose offsets were committed are kept and the file stays readable.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..address import Address
from ..config import Config
from ..errors import BadInput, UsageError
from ..formats import Format, format_for_path, format_named, sniff_format
from ..message import Message
from ..options import Options
from .stream import PathSource, StreamSink
from .tar import looks_like_tar, read_archive

GZIP_MAGIC = b"\x1f\x8b"


def peekable(stream: BinaryIO) -> BinaryIO:
    """``stream`` able to show its first bytes without consuming them (formats are sniffed)."""
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore


def peek(stream: BinaryIO, size: int) -> bytes:
    return stream.peek(size)[:size]  # type: ignore[attr-defined]


def read_messages(stream: BinaryIO, name: str, fmt: Format | None, options: Options
                  ) -> Iterator[Message]:
    """Messages of one stream, gunzipping it transparently and sniffing its format if unknown;
    a tar archive (ZTF's nightly ones: ``kcp convert < night.tar.gz``) is read member by member."""
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


class FileSource(PathSource):
    def read_file(self, stream: BinaryIO, path: str) -> Iterator[Message]:
        return read_messages(stream, path, format_for_path(path), self.options)


class FileSink(StreamSink):
    def __init__(self, path: str, options: Options, resume: bool = False) -> None:
        fmt = format_named(options.write_format) if options.write_format else format_for_path(path)
        if fmt is None:
            raise UsageError(f"{path}: cannot tell the format from the extension; give --to FORMAT")
        self.final = Path(path)
        self.partial = self.final.with_name(self.final.name + ".part")
        if self.final.exists() and not self.final.is_file():
            # A device, a FIFO, /dev/stdout: written in place (a rename would replace it)
            self.partial = self.final
            resume = False
        if resume and not self.partial.exists() and self.final.exists():
            os.replace(self.final, self.partial)
        resuming = resume and self.partial.exists()
        try:
            stream = open(self.partial, "r+b" if resuming else "wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
        self.stderr = options.environment.stderr
        self.resumable = resume
        writer = fmt.writer(options)
        if resuming:
            writer.recover(stream)
        super().__init__(stream, writer, path)

    def flush(self) -> None:
        super().flush()
        if self.partial is not self.final:
            os.fsync(self.stream.fileno())

    def close(self, complete: bool = True) -> None:
        try:
            self.writer.close()  # a format may end its file (Parquet writes its footer)
            self.flush()
        finally:
            self.stream.close()
            if self.partial is self.final:
                pass
            elif complete:
                os.replace(self.partial, self.final)
            else:
                how = ("a rerun with the same -g group continues it" if self.resumable
                       else f"{self.final} was not written")
                print(f"kcp: {self.partial}: the copy did not finish; what was written is kept "
                      f"there ({how})", file=self.stderr)


def open_source(address: Address, options: Options, config: Config) -> FileSource:
    return FileSource(address, options)


def open_sink(address: Address, options: Options, config: Config) -> FileSink:
    # A copy that resumes (a consumer group) continues its file rather than replace it.
    return FileSink(address.path or address.text, options, resume=options.group is not None)
