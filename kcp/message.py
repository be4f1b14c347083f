"""The unit that flows between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Message:
    """One record: its raw payload, where it came from, and once decoded, its datum and schema.

    ``value`` is the payload as it travels on the wire or sits in a file member; ``datum`` is the
    decoded Python value (a dict for records) and ``schema`` the :class:`kcp.codec.Schema` it was
    written with.  Either side may be missing until a stage fills it.
    """

    value: bytes | None = None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None
    source: str | None = None
    position: str | None = None
    datum: Any = None
    schema: Any = None
    decoded: bool = field(default=False)
    # Set by a source that could not read this record: the pipeline applies --on-error to it.
    error: Exception | None = None
    # The record's place when one message (a Kafka payload of several records, a --map
    # returning a list) made several: "2", or "2.1" for the first a --map made of the second.
    # None for the one record of a message. Tar members are named by it (no two the same).
    record: str | None = None

    def where(self) -> str:
        """Where this record came from, as error messages show it."""
        if self.topic is not None:
            return f"{self.topic}[{self.partition}]@{self.offset}"
        if self.position is not None:
            return f"{self.source}:{self.position}" if self.source else self.position
        return self.source or "<input>"
