"""Checks the shape of Avro data before fastavro reads it, for the schemas that need it.

fastavro trusts what a datum declares. Two kinds of schema let a few bytes claim unbounded work:

- a recursive schema (a linked list, a tree): a datum nested a few thousand levels deep
  overflows the C stack of fastavro's compiled reader, which kills the process;
- an array whose items can take no bytes (``null``, an empty record): a 10-byte count makes
  fastavro build a list of a billion items.

For those schemas (and only those: ZTF's and Rubin's have neither, so their hot path is
untouched) :class:`DatumGuard` walks the bytes first with an explicit stack, checking depth and
counts against :class:`~kcp.codec.limits.Limits`, and reports a ``BadInput`` instead.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadInput
from .limits import Limits
from .schemas import Schema, named_types
from .varint import read_long

_FIXED_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_VARINTS = {"int", "long", "enum"}
_ARRAY_BLOCK = object()  # a stack entry: the items of an array or map still to read
# Keyed by the Schema itself (parsed once per run by the SchemaStore), like the encoders' caches.
_GUARDS: dict[Schema, DatumGuard] = {}


def guard_for(schema: Schema) -> DatumGuard:
    """The checks ``schema``'s data needs, worked out the first time it is asked."""
    guard = _GUARDS.get(schema)
    if guard is None:
        guard = _GUARDS[schema] = DatumGuard(schema.parsed)
    return guard


class DatumGuard:
    """The shape checks one parsed schema needs; ``needed`` is False for most schemas."""

    def __init__(self, parsed: Any) -> None:
        self.named = named_types(parsed)
        self.root = parsed
        self._min_sizes: dict[str, int] = {}
        self.recursive = self._is_recursive(parsed)
        self.min_size = self._min_size(parsed, frozenset())
        self.empty_items = self._has_empty_items()
        self.needed = self.recursive or self.empty_items

    def _resolve(self, node: Any) -> Any:
        return self.named.get(node, node) if isinstance(node, str) else node

    def _kind(self, node: Any) -> str:
        node = self._resolve(node)
        if isinstance(node, list):
            return "union"
        return node["type"] if isinstance(node, dict) else node

    def _children(self, node: Any) -> list[Any]:
        node = self._resolve(node)
        if isinstance(node, list):
            return node
        if not isinstance(node, dict):
            return []
        kind = node["type"]
        if kind in ("record", "error"):
            return [f["type"] for f in node["fields"]]
        if kind == "array":
            return [node["items"]]
        if kind == "map":
            return [node["values"]]
        return []

    def _is_recursive(self, parsed: Any) -> bool:
        """Whether some named type contains a reference to itself."""
        for name, definition in self.named.items():
            stack, seen = list(self._children(definition)), set()
            while stack:
                node = stack.pop()
                if isinstance(node, str):
                    if node == name:
                        return True
                    if node in seen or node not in self.named:
                        continue
                    seen.add(node)
                stack.extend(self._children(node))
        return False

    def _min_size(self, node: Any, visiting: frozenset) -> int:
        """The fewest bytes a value of ``node`` is written in (0 on a cycle: a safe bound)."""
        name = node if isinstance(node, str) and node in self.named else None
        if name is not None:
            if name in visiting:
                return 0
            if name in self._min_sizes:
                return self._min_sizes[name]
            visiting = visiting | {name}
        kind = self._kind(node)
        resolved = self._resolve(node)
        if kind in _FIXED_SIZES:
            size = _FIXED_SIZES[kind]
        elif kind == "fixed":
            size = resolved["size"]
        elif kind == "union":
            size = 1 + min((self._min_size(b, visiting) for b in resolved), default=0)
        elif kind in ("record", "error"):
            size = sum(self._min_size(f["type"], visiting) for f in resolved["fields"])
        else:  # varints, bytes, strings, arrays and maps take at least one byte
            size = 1
        if name is not None:
            self._min_sizes[name] = size
        return size

    def _has_empty_items(self) -> bool:
        stack, seen = [self.root], set()
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                if node in seen:
                    continue
                seen.add(node)
            resolved = self._resolve(node)
            if (isinstance(resolved, dict) and resolved["type"] == "array"
                    and self._min_size(resolved["items"], frozenset()) == 0):
                return True
            stack.extend(self._children(node))
        return False

    def check_count(self, count: int, size: int, limits: Limits) -> None:
        """A block's declared record count against its size and ``limits.max_items``."""
        if count < 0:
            raise BadInput(f"OCF block declares a negative record count ({count})")
        if self.min_size and count > size // self.min_size:
            raise BadInput(f"truncated or trailing garbage after the last complete record (an "
                           f"OCF block declares {count} records, more than its {size} bytes "
                           "can hold)")
        if count > limits.max_items:
            raise BadInput(f"OCF block declares {count} records, more than --max-items "
                           f"{limits.max_items}")

    def skip(self, buf: bytes, pos: int, limits: Limits) -> int:
        """Walk one datum at ``pos`` without building it; return where it ends."""
        max_depth, budget = limits.max_depth, limits.max_items
        end = len(buf)
        stack: list[Any] = [(self.root, 1)]
        while stack:
            entry = stack.pop()
            if entry[0] is _ARRAY_BLOCK:
                _, items, is_map, remaining, depth, empty = entry
                if remaining:
                    stack.append((_ARRAY_BLOCK, items, is_map, remaining - 1, depth, empty))
                    stack.append((items, depth))
                    if is_map:
                        stack.append(("string", depth))
                    continue
                count, pos = read_long(buf, pos)
                if count == 0:
                    continue
                if count < 0:
                    count = -count
                    _, pos = read_long(buf, pos)  # the block's size in bytes
                if empty:
                    budget -= count
                    if budget < 0:
                        raise BadInput(f"an array declares more than --max-items "
                                       f"{limits.max_items} items")
                elif count > end - pos:
                    raise BadInput(f"an array or map declares {count} items, more than the "
                                   f"{end - pos} bytes left can hold")
                stack.append((_ARRAY_BLOCK, items, is_map, count, depth, empty))
                continue
            node, depth = entry
            kind = self._kind(node)
            if kind in _VARINTS:
                _, pos = read_long(buf, pos)
            elif kind in ("string", "bytes"):
                length, pos = read_long(buf, pos)
                if length < 0 or pos + length > end:
                    raise BadInput("truncated Avro datum (a string or bytes runs past the end)")
                pos += length
            elif kind in _FIXED_SIZES or kind == "fixed":
                pos += _FIXED_SIZES[kind] if kind in _FIXED_SIZES else self._resolve(node)["size"]
                if pos > end:
                    raise BadInput("truncated Avro datum")
            elif kind == "union":
                branches = self._resolve(node)
                index, pos = read_long(buf, pos)
                if not 0 <= index < len(branches):
                    raise BadInput(f"invalid union index {index}")
                stack.append((branches[index], depth))
            else:
                if depth > max_depth:
                    raise BadInput(f"datum nested deeper than --max-depth {max_depth}")
                resolved = self._resolve(node)
                if kind in ("record", "error"):
                    stack.extend((f["type"], depth + 1) for f in reversed(resolved["fields"]))
                else:
                    items = resolved["items"] if kind == "array" else resolved["values"]
                    empty = kind == "array" and self._min_size(items, frozenset()) == 0
                    stack.append((_ARRAY_BLOCK, items, kind == "map", 0, depth + 1, empty))
        return pos
