"""Files and globs of files.

A file being written goes to ``NAME.part`` beside its final name and is renamed into place when
the run ends (also after an error or Ctrl-C, keeping what was written): a crash never leaves a
torn file under the final name.  Data is flushed and fsynced at every checkpoint, before the
source commits.

When the source resumes (a consumer group), so does the file: a rerun continues ``NAME.part``
(or the finished ``NAME``), first cutting the torn tail a crash may have left, so the records
whose offsets were committed are kept and the file stays readable.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..address import Address
from ..config import Config
from ..errors import UsageError
from ..formats import format_for_path, format_named
from ..message import Message
from ..options import Options
from .stream import QuietSource, StreamSink, read_messages


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
        self.paths = expand(address.path or address.text)
        self.name = address.text
        self.options = options
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Message]:
        for path in self.paths:
            try:
                stream = open(path, "rb")
            except OSError as exc:
                raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
            self.bytes_read += os.fstat(stream.fileno()).st_size
            with stream:
                yield from self.read_file(stream, path)

    def read_file(self, stream: BinaryIO, path: str) -> Iterator[Message]:
        raise NotImplementedError


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
        if resume and not self.partial.exists() and self.final.exists():
            os.replace(self.final, self.partial)
        resuming = resume and self.partial.exists()
        try:
            stream = open(self.partial, "r+b" if resuming else "wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
        if resuming:
            fmt.writer(options).recover(stream)
        super().__init__(stream, fmt, options, path)

    def flush(self) -> None:
        super().flush()
        os.fsync(self.stream.fileno())

    def close(self) -> None:
        try:
            self.writer.close()  # a format may end its file (Parquet writes its footer)
            self.flush()
        finally:
            self.stream.close()
            os.replace(self.partial, self.final)


def open_source(address: Address, options: Options, config: Config) -> FileSource:
    return FileSource(address, options)


def open_sink(address: Address, options: Options, config: Config, resume: bool = False
              ) -> FileSink:
    return FileSink(address.path or address.text, options, resume)
