"""In-process filtering stages: ``--where EXPR`` (its language: kcp.where), ``--fields PATHS``,
``--since/--until``.

A stage is a callable ``Message -> Message | None``; ``None`` drops the record.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .codec.native import JsonDocument
from .errors import BadInput, UsageError
from .message import Message
from .times import parse_time
from .where import compile_where, field_paths, kind_of

Stage = Callable[[Message], Message | None]


def where_stage(text: str) -> Stage:
    """The ``--where`` stage: drops the messages whose datum does not match ``text``."""
    predicate = compile_where(text)
    return lambda message: message if predicate(message.datum) else None


def field_tree(spec: str) -> dict[str, Any]:
    """``a.b,a.c,d`` -> ``{"a": {"b": None, "c": None}, "d": None}`` (None: keep it whole)."""
    tree: dict[str, Any] = {}
    for item in spec.split(","):
        names = [name.strip() for name in item.split(".")]
        if not all(names):
            raise UsageError(f"--fields {spec!r}: expected dotted names separated by commas")
        node = tree
        for name in names[:-1]:
            if (node := node.setdefault(name, {})) is None:  # `a,a.b`: all of `a` is kept
                break
        else:
            node[names[-1]] = None
    return tree


def _project(value: Any, tree: dict[str, Any] | None) -> Any:
    if tree is None:
        return value
    if isinstance(value, dict):
        # The record's own order, not the option's: the output reads like the input.
        return {key: _project(item, tree[key]) for key, item in value.items()
                if key in tree and (tree[key] is None or isinstance(item, dict | list))}
    if isinstance(value, list):  # `prv_candidates.jd`: that field of every element
        return [_project(item, tree) for item in value]
    return None


def project_stage(spec: str) -> Stage:
    """The ``--fields`` stage: keeps only the listed dotted paths of each record, nested as
    they were.  The result no longer fits the record's schema, so the schema is dropped: JSON
    output is plain JSON, and Avro output needs ``--schema``."""
    tree = field_tree(spec)

    def project(message: Message) -> Message:
        if type(message.datum) is JsonDocument:  # projected as it was read (kcp.codec.native)
            message.schema = None
            return message
        if not isinstance(message.datum, dict):
            raise BadInput(f"--fields selects fields of records, not of {kind_of(message.datum)}")
        message.datum = _project(message.datum, tree)
        message.schema = None
        return message
    return project


def _named_types(schema: Any, named: dict[str, Any]) -> None:
    """Every named type defined in ``schema``, by its short and full names."""
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, named)
    elif isinstance(schema, dict):
        if "name" in schema and schema.get("type") in ("record", "error", "enum", "fixed"):
            named[schema["name"]] = schema
            named.setdefault(f"{schema.get('namespace', '')}.{schema['name']}".lstrip("."),
                             schema)
        for field in schema.get("fields", ()):
            _named_types(field.get("type"), named)
        for key in ("items", "values", "type"):
            if not isinstance(schema.get(key), str):
                _named_types(schema.get(key), named)


def _fields_at(schema: Any, named: dict[str, Any]) -> dict[str, Any] | None:
    """The names a path step may take at ``schema`` and the schema of each; None when any
    name goes (a map)."""
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, list):  # a union: the names of any of its branches
        found: dict[str, Any] = {}
        for branch in schema:
            names = _fields_at(branch, named)
            if names is None:
                return None
            found.update(names)
        return found
    if not isinstance(schema, dict):
        return {}
    kind = schema.get("type")
    if kind in ("record", "error"):
        return {field["name"]: field["type"] for field in schema.get("fields", ())}
    if kind == "array":  # `prv_candidates.jd`: that field of every element
        return _fields_at(schema["items"], named)
    if kind == "map":
        return None
    return _fields_at(kind, named) if isinstance(kind, dict | list) else {}


def misspelt(path: tuple, schema: Any) -> str | None:
    """What is wrong with a field path the writer schema ``schema`` does not have: the first
    missing name and the nearest one there is; None when the path is there."""
    named: dict[str, Any] = {}
    _named_types(schema, named)
    at = schema
    for depth, step in enumerate(path):
        if isinstance(step, int):  # an index: the elements of an array
            at = at.get("items") if isinstance(at, dict) else at
            continue
        names = _fields_at(at, named)
        if names is None:
            return None
        if step not in names:
            shown = ".".join(str(s) for s in path)
            near = difflib.get_close_matches(step, list(names), n=1)
            hint = (f" (did you mean {'.'.join(str(s) for s in (*path[:depth], near[0]))}?)"
                    if near else "")
            return f"no field {shown} in the records' schema{hint}: it matches nothing"
        at = names[step]
    return None


def field_check_stage(paths: list[tuple[str, tuple]], stderr: TextIO) -> Stage:
    """Warns once, on the first record with a schema, about each ``(option, path)`` the
    schema does not have (``--where 'candidate.magpfs < 16'`` would silently match
    nothing); the records pass unchanged."""
    checked = False

    def check(message: Message) -> Message:
        nonlocal checked
        if not checked and message.schema is not None:
            checked = True
            for option, path in paths:
                problem = misspelt(path, message.schema.definition)
                if problem is not None:
                    print(f"kcp: warning: {option}: {problem}", file=stderr)
        return message
    return check


def fields_named(steps: tuple[tuple[str, str], ...], fields: str | None) -> list[tuple[str, tuple]]:
    """The field paths ``--where`` and ``--fields`` name, each with its option."""
    named = [("--where", path) for kind, text in steps if kind == "where"
             for path in field_paths(text)]
    if fields:
        named += [("--fields", tuple(name.strip() for name in item.split(".")))
                  for item in fields.split(",")]
    return named


def time_window_stage(since: str | None, until: str | None, now: float | None = None) -> Stage:
    """Keeps messages whose Kafka timestamp is in ``[since, until)``; messages without one
    (read from files, or Kafka's -1 for "not available") pass."""
    now = time.time() if now is None else now
    bounds = []
    for option, text in (("--since", since), ("--until", until)):
        try:
            bounds.append(None if text is None else parse_time(text, now))
        except UsageError as error:
            raise error.at(option) from None
    low, high = bounds
    if low is not None and high is not None and low >= high:
        raise UsageError(f"--since {since} is not before --until {until}: nothing can match")

    def window(message: Message) -> Message | None:
        stamp = message.timestamp
        if stamp is None or stamp < 0:
            return message
        if (low is not None and stamp < low) or (high is not None and stamp >= high):
            return None
        return message
    return window


def apply(stages: list[Callable[[Message], Any]], message: Message) -> Iterator[Message]:
    """Run ``message`` through ``stages``: each returns None, a message, or several."""
    if not stages:
        yield message
        return
    first, rest = stages[0], stages[1:]
    result = first(message)
    if result is None:
        return
    if isinstance(result, Message):
        yield from apply(rest, result)
        return
    for produced in result:
        yield from apply(rest, produced)
