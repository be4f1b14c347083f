"""In-process filtering stages: ``--where EXPR`` (its language: kcp.where), ``--fields PATHS``,
``--since/--until``.

A stage is a callable ``Message -> Message | None``; ``None`` drops the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import BadInput, UsageError
from .message import Message
from .times import parse_time
from .where import compile_where, kind_of

Stage = Callable[[Message], Message | None]


def where_stage(text: str) -> Stage:
    """The ``--where`` stage: drops the messages whose datum does not match ``text``."""
    predicate = compile_where(text)
    return lambda message: message if predicate(message.datum) else None


def _field_tree(spec: str) -> dict[str, Any]:
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
    tree = _field_tree(spec)

    def project(message: Message) -> Message:
        if not isinstance(message.datum, dict):
            raise BadInput(f"--fields selects fields of records, not of {kind_of(message.datum)}")
        message.datum = _project(message.datum, tree)
        message.schema = None
        return message
    return project


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
