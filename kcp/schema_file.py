"""``--save-schema FILE``: the writer schema of the records a copy reads, saved as it goes.

A stream may change schema mid-way (a new alert version, a topic of mixed producers): the first
schema goes to FILE, every further distinct one to FILE with its number before the extension
(``alert.avsc``, ``alert.2.avsc``, ...), and each such change is said on stderr, so nothing is
overwritten silently and no schema is lost.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .codec import Schema
from .errors import UsageError
from .message import Message


def _to_stderr(text: str) -> None:
    sys.stderr.write(f"kcp: {text}\n")


class SchemaSaver:
    """A stage writing each distinct schema of the records it sees; records pass unchanged."""

    def __init__(self, path: str | os.PathLike[str],
                 report: Callable[[str], None] = _to_stderr) -> None:
        self.path = Path(path)
        self.report = report
        self.seen: dict[Schema, Path] = {}
        self.by_definition: dict[str, Path] = {}
        if not self.path.parent.is_dir():
            raise UsageError(f"--save-schema {path}: no folder {self.path.parent}")

    def __call__(self, message: Message) -> Message:
        schema = message.schema
        if schema is not None and schema not in self.seen:
            self.seen[schema] = self._save(schema, message)
        return message

    def _save(self, schema: Schema, message: Message) -> Path:
        # The same schema may come as several objects (one per registry id or header text).
        key = json.dumps(schema.definition, sort_keys=True)
        known = self.by_definition.get(key)
        if known is not None:
            return known
        number = len(self.by_definition) + 1
        path = self.path if number == 1 else self.path.with_name(
            f"{self.path.stem}.{number}{self.path.suffix}")
        partial = path.with_name(path.name + ".part")
        try:
            partial.write_text(json.dumps(schema.definition, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            raise UsageError(f"--save-schema: cannot write {path}: {exc.strerror}") from None
        if number > 1:
            self.report(f"--save-schema: schema {number} ({schema.name}, fingerprint "
                        f"{schema.fingerprint:016x}) first seen at {message.where()}: "
                        f"saved as {path}")
        self.by_definition[key] = path
        return path
