"""``--partition-by FIELD``: a folder of files, one folder per value of a record field.

``kcp cp night.tar.gz night.parquet --partition-by candidate.fid`` writes
``night.parquet/candidate.fid=1/part-00000.parquet``, ``candidate.fid=2/...``: the Hive layout
that pyarrow, pandas, polars, DuckDB and Spark read as one dataset with the field as a column.
The format comes from the destination's extension (or ``--to``), as for a single file.

At most ``MOST_OPEN`` files are open at once: a partition whose file was closed to make room
gets a new part file when it comes back, so a field of many values (objectId) still works,
each part a whole file. A record lacking the field is bad input; a null value goes to the
Hive default partition.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..address import Address
from ..config import Config
from ..contracts import SinkTraits
from ..errors import BadInput, UsageError
from ..formats import format_for_path, format_named
from ..message import Message
from ..options import Options
from .file import FileSink

MOST_OPEN = 32
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# What a folder name may hold of a value: the rest becomes "_" (no "/", no "..").
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def partition_value(datum: Any, path: str) -> str:
    """The folder-safe text of ``datum``'s field at the dotted ``path``."""
    value = datum
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadInput(f"--partition-by {path}: the record has no such field")
        value = value[part]
    if value is None:
        return NULL_PARTITION
    if isinstance(value, (dict, list, bytes)):
        raise BadInput(f"--partition-by {path}: a {type(value).__name__}, not a plain value")
    text = _UNSAFE.sub("_", str(value))
    return "_" + text if text.startswith(".") or not text else text


class PartitionedSink:
    # The file is chosen per record: -j workers hand decoded records.
    traits = SinkTraits()

    def __init__(self, folder: str, options: Options) -> None:
        if options.group is not None:
            raise UsageError("--partition-by writes new part files each run: a copy with a "
                             "consumer group (-g) cannot continue them; copy without -g")
        fmt = format_named(options.write_format) if options.write_format \
            else format_for_path(folder)
        if fmt is None or not fmt.extensions:
            raise UsageError(f"{folder}: --partition-by needs a file format: name the folder "
                             "like a file (night.parquet, night.jsonl) or give --to FORMAT")
        self.field = options.partition_by
        self.folder = Path(folder)
        suffix = self.folder.suffix.lower()  # night.jsonl's parts are .jsonl, not .json
        self.extension = suffix if suffix in fmt.extensions else fmt.extensions[0]
        self.options = options
        self.open: OrderedDict[str, FileSink] = OrderedDict()  # least recently used first
        self.parts: dict[str, int] = {}  # part files made, per partition
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{folder}: cannot make the folder: {exc.strerror}") from None

    def write(self, message: Message) -> None:
        value = partition_value(message.datum, self.field)
        sink = self.open.get(value)
        if sink is None:
            sink = self._open(value)
        else:
            self.open.move_to_end(value)
        sink.write(message)

    def _open(self, value: str) -> FileSink:
        if len(self.open) >= MOST_OPEN:
            _, oldest = self.open.popitem(last=False)
            oldest.close()
        folder = self.folder / f"{self.field}={value}"
        folder.mkdir(exist_ok=True)
        number = self.parts.get(value, 0)
        while (folder / f"part-{number:05d}{self.extension}").exists():
            number += 1  # a part of an earlier run: kept
        self.parts[value] = number + 1
        sink = self.open[value] = FileSink(str(folder / f"part-{number:05d}{self.extension}"),
                                           self.options)
        return sink

    def idle(self) -> None:
        for sink in self.open.values():
            sink.idle()

    def flush(self) -> None:
        for sink in self.open.values():
            sink.flush()

    def copies_from(self, source: object) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        failure: Exception | None = None
        while self.open:  # every file is finished, even when one cannot be
            _, sink = self.open.popitem(last=False)
            try:
                sink.close(complete)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def open_sink(address: Address, options: Options, config: Config) -> PartitionedSink:
    return PartitionedSink(os.path.expanduser(address.path or address.text), options)
