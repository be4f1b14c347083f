"""``--bytes file:DIR``: each bytes field of a record (a cutout) written to a file of its own.

The file is ``DIR/<id>.<field>.fits``: ``<id>`` the alert's ``candid`` (ZTF), ``diaSourceId``
(Rubin) or ``alertId``, else ``<topic>-<partition>-<offset>``, else the record's number in
the run; ``<field>`` the record's top-level field holding the bytes (ZTF's
``cutoutScience.stampData`` is ``cutoutScience``; a field holding several bytes values adds
their path). A gzip-compressed stamp, as ZTF's are, is written decompressed, so every file
opens in astropy or ds9; bytes that are not FITS get ``.bin``. The JSON holds the file's name
inside DIR in place of the bytes.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any

from ..codec import Schema
from ..codec.schemas import named_types
from ..errors import BadInput, UsageError
from ..message import Message

FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"
# A gzip stamp is a few kB; a claim of more than this once decompressed is hostile.
MAX_STAMP_BYTES = 256 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class CutoutFiles:
    """Replaces the bytes values of decoded records by the names of the files they went to."""

    def __init__(self, folder: str) -> None:
        if not folder:
            raise UsageError("--bytes file:DIR needs a folder, e.g. --bytes file:cutouts")
        self.folder = Path(folder)
        self._schemas: dict[Schema, _BytesHolders] = {}
        self._number = 0

    def replace(self, message: Message) -> None:
        """Write ``message``'s bytes values to files and put the files' names in their place."""
        self._number += 1
        datum = message.datum
        if not isinstance(datum, dict):
            return
        schema = message.schema
        if isinstance(schema, Schema):
            if schema not in self._schemas:
                self._schemas[schema] = _BytesHolders(schema.parsed)
            holders: _BytesHolders | None = self._schemas[schema]
            node = schema.parsed
        else:
            holders = node = None
        found: list[tuple[list[Any], Any, Any]] = []  # (path, container, key)
        _collect(datum, node, holders, [], found)
        if not found:
            return
        per_field: dict[Any, int] = {}
        for path, _, _ in found:
            per_field[path[0]] = per_field.get(path[0], 0) + 1
        stem = _UNSAFE.sub("_", str(self._identity(message)))
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, container, key in found:
            field = _UNSAFE.sub("_", str(path[0]) if per_field[path[0]] == 1
                                else ".".join(map(str, path)))
            data = _plain(container[key], f"{stem} {field}")
            name = f"{stem}.{field}.{'fits' if data.startswith(FITS_MAGIC) else 'bin'}"
            _write(self.folder / name, data)
            container[key] = name

    def _identity(self, message: Message) -> Any:
        datum = message.datum
        source = datum.get("diaSource")
        for value in (datum.get("candid"), datum.get("diaSourceId"),
                      source.get("diaSourceId") if isinstance(source, dict) else None,
                      datum.get("alertId")):
            if value is not None:
                return value
        if message.topic is not None:
            return f"{message.topic}-{message.partition}-{message.offset}"
        return self._number


class _BytesHolders:
    """Which parts of a parsed schema can hold bytes, so that the long histories of an alert,
    which hold none, are never walked."""

    def __init__(self, parsed: Any) -> None:
        self.named = named_types(parsed)
        self._answers: dict[str, bool] = {}

    def resolve(self, node: Any) -> Any:
        return self.named.get(node, node) if isinstance(node, str) else node

    def may_hold(self, node: Any) -> bool:
        if isinstance(node, str):
            if node not in self.named:
                return node == "bytes"
            if node not in self._answers:
                self._answers[node] = False  # a recursive type: no bytes through the loop
                self._answers[node] = self.may_hold(self.named[node])
            return self._answers[node]
        if isinstance(node, list):
            return any(self.may_hold(branch) for branch in node)
        kind = node["type"]
        if kind in ("record", "error"):
            return any(self.may_hold(f["type"]) for f in node["fields"])
        if kind == "array":
            return self.may_hold(node["items"])
        if kind == "map":
            return self.may_hold(node["values"])
        return kind == "fixed" or (kind != "enum" and self.may_hold(kind))


def _collect(value: Any, node: Any, holders: _BytesHolders | None, path: list[Any],
             found: list[tuple[list[Any], Any, Any]]) -> None:
    """Every bytes value under ``value``; ``node`` its schema (None: unknown, look everywhere)."""
    if holders is not None and node is not None:
        if not holders.may_hold(node):
            return
        node = holders.resolve(node)
        if isinstance(node, list):  # Rubin's and ZTF's ["null", X]; other unions: look everywhere
            branches = [b for b in node if b != "null"]
            node = holders.resolve(branches[0]) if len(branches) == 1 else None
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, inner in items:
        if isinstance(inner, (bytes, bytearray)):
            found.append(([*path, key], value, key))
        elif isinstance(inner, (dict, list)):
            _collect(inner, _child(node, key), holders, [*path, key], found)


def _child(node: Any, key: Any) -> Any:
    """The schema of the value under ``key`` of a value of schema ``node`` (None: unknown)."""
    if not isinstance(node, dict):
        return None
    kind = node["type"]
    if kind in ("record", "error"):
        return next((f["type"] for f in node["fields"] if f["name"] == key), None)
    if kind == "array":
        return node["items"]
    if kind == "map":
        return node["values"]
    return None


def _plain(data: bytes, what: str) -> bytes:
    """``data``, decompressed when it is gzip (ZTF's stamps)."""
    data = bytes(data)
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, MAX_STAMP_BYTES)
    except zlib.error as exc:
        raise BadInput(f"{what}: a gzip cutout that does not decompress ({exc})") from None
    if inflater.unconsumed_tail:
        raise BadInput(f"{what}: a gzip cutout of more than {MAX_STAMP_BYTES >> 20} MB")
    return plain


def _write(path: Path, data: bytes) -> None:
    # Written aside and renamed: a file with the final name is always complete.
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
