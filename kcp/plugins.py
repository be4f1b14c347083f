"""User code in the pipeline: ``--map`` functions, ``--pipe-through`` programs, entry points.

``--map TARGET`` names a function ``f(alert) -> alert | None | iterable of alerts`` as
``package.module:function``, ``path/to/file.py:function``, or the name of an installed
plugin (entry point group ``kcp.stages.v1``).  Its module may define ``setup(options)`` and
``teardown()`` (called once: load a model in ``setup``) and ``OUTPUT_FIELDS``, a list of Avro
fields the function adds, so that the output schema is the input schema extended with them.

``--pipe-through 'CMD ARGS'`` streams JSON Lines through a long-running program in any
language: one line out for each line in, the record (annotated) or ``null`` to drop it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
import os
import selectors
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from .codec import AvroToJson, JsonToAvro, Schema, inline_bytes_mode, json_loads
from .errors import BadInput, KcpError, UsageError
from .message import Message

STAGE_GROUP = "kcp.stages.v1"


def installed(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=group)}


def _load_module(spec: str) -> ModuleType:
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise UsageError(f"--map {spec}: no such file")
        name = f"kcp_map_{path.stem}_{abs(hash(str(path))):x}"
        if name in sys.modules:  # several --map of one file share one module (one setup)
            return sys.modules[name]
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
        sys.modules[loader.name] = module  # type: ignore[union-attr]
        loader.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    return importlib.import_module(spec)


def resolve_function(target: str) -> tuple[Callable[[Any], Any], ModuleType]:
    """The function a ``--map`` target names, and its module."""
    if ":" not in target:
        plugins = installed(STAGE_GROUP)
        if target not in plugins:
            known = ", ".join(sorted(plugins)) or "none installed"
            raise UsageError(f"--map {target}: not MODULE:FUNCTION, FILE.py:FUNCTION or an "
                             f"installed stage ({known})")
        function = plugins[target].load()
        return function, sys.modules[function.__module__]
    module_spec, _, name = target.rpartition(":")
    try:
        module = _load_module(module_spec)
    except UsageError:
        raise
    except Exception as exc:  # the user's module failed to import: say so, in one line
        raise UsageError(f"--map {target}: cannot load {module_spec}: "
                         f"{type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"--map {target}: {module_spec} has no function {name!r}")
    return function, module


def extend_schema(schema: Schema, fields: list[dict[str, Any]], what: str) -> Schema:
    """``schema`` with ``fields`` appended: readers of the old schema still read the new."""
    definition = copy.deepcopy(schema.definition)
    if not isinstance(definition, dict) or definition.get("type") != "record":
        raise UsageError(f"{what}: only records can be extended with fields")
    existing = {f["name"] for f in definition["fields"]}
    for field in fields:
        if "default" not in field:
            raise UsageError(f"{what}: added field {field.get('name')!r} needs a default "
                             "(e.g. \"type\": [\"null\", ...], \"default\": null)")
        if field["name"] in existing:
            raise UsageError(f"{what}: field {field['name']!r} is already in {schema.name}")
    definition["fields"] = definition["fields"] + list(fields)
    return Schema(definition)


class MapStage:
    """A ``--map`` function as a pipeline stage.

    A module's ``setup`` runs before its first stage and ``teardown`` after its last one, once
    however many of its functions are mapped.
    """

    _users: dict[str, int] = {}

    def __init__(self, target: str, options: Any, out_schema: Schema | None = None) -> None:
        self.target = target
        self.function, self.module = resolve_function(target)
        self.added = getattr(self.module, "OUTPUT_FIELDS", None)
        self.out_schema = out_schema
        self._extended: dict[Schema, Schema] = {}
        users = self._users.get(self.module.__name__, 0)
        self._users[self.module.__name__] = users + 1
        setup = getattr(self.module, "setup", None)
        if not users and callable(setup):
            self._call_hook(setup, options)

    def _call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            raise KcpError(f"--map {self.target}: {hook.__name__}() failed: "
                           f"{type(exc).__name__}: {exc}") from None

    def schema_for(self, schema: Schema | None) -> Schema | None:
        if self.out_schema is not None or schema is None or not self.added:
            return self.out_schema or schema
        extended = self._extended.get(schema)
        if extended is None:
            extended = self._extended[schema] = extend_schema(schema, self.added,
                                                              f"--map {self.target}")
        return extended

    def __call__(self, message: Message) -> Iterable[Message]:
        try:
            result = self.function(message.datum)
        except Exception as exc:
            raise BadInput(f"--map {self.target}: {type(exc).__name__}: {exc}") from None
        if result is None:
            return ()
        schema = self.schema_for(message.schema)
        results = [result] if isinstance(result, dict) else result
        if not isinstance(results, (list, tuple)) or not all(isinstance(r, dict)
                                                             for r in results):
            raise BadInput(f"--map {self.target} returned {type(result).__name__}: a function "
                           "returns a record (dict), None, or a list of records")
        if len(results) == 1:
            return [_changed(message, results[0], schema)]
        # Several records of one: each its own place, so that none takes another's tar member.
        prefix = f"{message.record}." if message.record is not None else ""
        return [_changed(message, datum, schema, f"{prefix}{number}")
                for number, datum in enumerate(results, 1)]

    def close(self) -> None:
        self._users[self.module.__name__] -= 1
        teardown = getattr(self.module, "teardown", None)
        if not self._users[self.module.__name__] and callable(teardown):
            self._call_hook(teardown)


def _changed(message: Message, datum: Any, schema: Schema | None,
             record: str | None = None) -> Message:
    """A copy of ``message`` carrying ``datum``; its original payload no longer applies.
    ``record``: its place among the records a function made of one (Message.record)."""
    return Message(key=message.key, headers=message.headers, topic=message.topic,
                   partition=message.partition, offset=message.offset,
                   timestamp=message.timestamp, source=message.source,
                   position=message.position, datum=datum, schema=schema, decoded=True,
                   record=record if record is not None else message.record)


class PipeStage:
    """``--pipe-through``: a program answering one JSON line per JSON line it is given."""

    def __init__(self, command: str, options: Any, out_schema: Schema | None = None,
                 timeout: float = 30.0) -> None:
        self.command = command
        self.timeout = timeout
        self.out_schema = out_schema
        self.to_json = AvroToJson(inline_bytes_mode(options.bytes_mode), options.json_style,
                                  options.mapped)
        self.to_avro = JsonToAvro(inline_bytes_mode(options.bytes_mode), options.json_style)
        try:
            self.process = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, bufsize=0)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--pipe-through {command!r}: cannot start it: {exc}") from None
        self.max_line = options.limits.max_line_bytes
        # kcp writes and reads with a deadline: a program that stops reading its input, or
        # never ends its line, must not hang the run.
        os.set_blocking(self.process.stdin.fileno(), False)  # type: ignore[union-attr]
        self.readable = selectors.DefaultSelector()
        self.readable.register(self.process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.writable = selectors.DefaultSelector()
        self.writable.register(self.process.stdin, selectors.EVENT_WRITE)  # type: ignore[arg-type]
        self.pending = bytearray()
        self.answered = 0

    def _failed(self, what: str) -> KcpError:
        return KcpError(f"--pipe-through {self.command!r}: {what} after {self.answered} "
                        "records")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if not self.writable.select(self.timeout):
                raise self._failed(f"did not read its input within {self.timeout:g}s")
            try:
                view = view[os.write(self.process.stdin.fileno(), view):]  # type: ignore[union-attr]
            except BrokenPipeError:
                raise self._failed(f"exited with status {self.process.wait(5)}") from None

    def _receive(self) -> bool:
        """Read what the program has written into ``pending``; False at its end."""
        chunk = os.read(self.process.stdout.fileno(), 1 << 16)  # type: ignore[union-attr]
        self.pending += chunk
        return bool(chunk)

    def _read_line(self) -> bytes:
        searched = 0
        while (end := self.pending.find(b"\n", searched)) < 0:
            searched = len(self.pending)
            if searched > self.max_line:
                raise self._failed(f"answered a line longer than --max-line-size "
                                   f"{self.max_line >> 20} MB")
            if not self.readable.select(self.timeout):
                raise self._failed(f"no answer within {self.timeout:g}s")
            if not self._receive():
                raise self._failed(f"exited with status {self.process.wait(5)}")
        line = bytes(self.pending[:end])
        del self.pending[:end + 1]
        return line

    def __call__(self, message: Message) -> Iterable[Message]:
        # An answer before the question: the program wrote more than one line for a record,
        # and every later answer would belong to the wrong record.
        if self.pending or (self.readable.select(0) and self._receive()):
            raise self._failed("answered more lines than it was given records (it must write "
                               "exactly one line per record)")
        self._write(self.to_json(copy.deepcopy(message.datum), message.schema) + b"\n")
        answer = self._read_line()
        self.answered += 1
        try:
            value = json_loads(answer)
        except orjson.JSONDecodeError:
            raise BadInput(f"--pipe-through {self.command!r} answered with invalid JSON: "
                           f"{answer[:60]!r}") from None
        if value is None:
            return ()
        schema = self.out_schema or message.schema
        datum = self.to_avro.datum(value, schema) if schema is not None else value
        return [_changed(message, datum, schema)]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            # Every answer wanted has been read: a program still writing (endlessly, or to
            # a pipe nobody reads) ends on EPIPE now instead of at the timeout.
            self.process.stdout.close()  # type: ignore[union-attr]
            try:
                self.process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
