"""The one address grammar of kcp (see ``kcp --help`` and the README's table).

- ``-``: stdin or stdout;
- a path or a glob of paths; the format comes from the extension unless --from/--to says;
- ``kafka://[group@]host[:port][,host2...]/topic[,topic2...]``;
- ``NAME:topic``: NAME is a broker alias from the config file, or host[:port];
- a bare topic name, on the default broker.
Topics may be ``^regex`` patterns.  ``NAME:`` with no topic names a broker alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .times import parse_time

_TOPIC = re.compile(r"^[A-Za-z0-9._-]+$")
# A file address with one of these extensions is a tar archive (kcp.transports.tar).
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Address:
    """Where records come from or go to."""

    kind: str  # "kafka", "file" or "stdio"
    text: str
    broker: str | None = None  # an alias or host[:port] list; None means the default broker
    topics: tuple[str, ...] = ()
    group: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return self.text


def parse_address(text: str, aliases: Container[str] = (), extensions: tuple[str, ...] = ()
                  ) -> Address:
    """Parse ``text``; ``aliases`` are the broker names the config file defines, ``extensions``
    the file name endings that make a name a path (kcp.formats.file_extensions)."""
    if not text:
        raise UsageError("empty address")
    if text == "-":
        return Address("stdio", text)
    if text.startswith("kafka://"):
        return _parse_url(text)
    if _looks_like_path(text, extensions):
        return Address("file", text, path=text)
    name, sep, topic = text.rpartition(":")
    if sep and name:
        if name not in aliases and not _is_host_list(name):
            raise UsageError(f"{text}: {name!r} is neither a configured broker alias nor a "
                             "host[:port]")
        return Address("kafka", text, broker=name, topics=_topics(topic, text))
    return Address("kafka", text, topics=_topics(text, text))


def is_tar_path(path: str) -> bool:
    """Whether a file address names a tar archive, by its extension."""
    return path.lower().endswith(TAR_EXTENSIONS)


def _looks_like_path(text: str, extensions: tuple[str, ...]) -> bool:
    if text.startswith(("/", "./", "../", "~")) or os.path.exists(text):
        return True
    if any(c in text for c in "*?[") and ":" not in text and not text.startswith("^"):
        return True
    lowered = text.lower()
    return "/" in text.split(":", 1)[-1] or lowered.endswith(extensions)


def _is_host_list(text: str) -> bool:
    return all(re.fullmatch(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9a-fA-F:]+\](:\d+)?", h)
               for h in text.split(","))


def _topics(text: str, whole: str) -> tuple[str, ...]:
    if not text:
        return ()
    topics = tuple(text.split(",")) if not text.startswith("^") else (text,)
    for topic in topics:
        if not topic.startswith("^") and not _TOPIC.match(topic):
            raise UsageError(f"{whole}: {topic!r} is not a valid Kafka topic name "
                             "(letters, digits, '.', '_' and '-')")
        if topic.startswith("^"):
            try:
                re.compile(topic)
            except re.error as exc:
                raise UsageError(f"{whole}: bad topic pattern: {exc}") from None
    return topics


def _parse_url(text: str) -> Address:
    rest = text[len("kafka://"):]
    hosts, _, topic_part = rest.partition("/")
    group = None
    if "@" in hosts:
        group, hosts = hosts.split("@", 1)
    if not hosts:
        raise UsageError(f"{text}: no broker in the URL (kafka://[group@]host[:port]/topic)")
    return Address("kafka", text, broker=hosts, topics=_topics(topic_part, text),
                   group=group or None)


def parse_offset(text: str) -> tuple[str, Any]:
    """``-o beginning|end|N|-N|@TIME`` (kcp.times) as (kind, value): ("named", "beginning"),
    ("absolute", N), ("from_end", N) or ("time", milliseconds)."""
    if text in ("beginning", "end"):
        return "named", text
    if text.startswith("@"):
        try:
            return "time", parse_time(text[1:])
        except UsageError as error:
            raise error.at(f"-o {text}") from None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"-o {text}: expected beginning, end, N, -N, @MS or @ISO-8601") from None
    return ("from_end", -value) if value < 0 else ("absolute", value)
