"""Parsed Avro schemas, their identities, and where they come from.

A :class:`Schema` is parsed once and then found again by what identifies it on the wire: the
schema text embedded in an OCF header, a Confluent/Rubin registry id, or a single-object
fingerprint.  :class:`SchemaStore` holds them, so no path parses a schema per message.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ..errors import BadInput, UsageError
from .limits import Limits


class Schema:
    """An Avro schema parsed for fastavro, with its canonical identities."""

    __slots__ = ("definition", "fingerprint", "name", "parsed", "registry_id", "text")

    def __init__(self, definition: Any, registry_id: int | None = None,
                 max_depth: int = Limits.max_depth) -> None:
        # fastavro and kcp's own compilers recurse over a schema: a deep one is refused first.
        # A record nests four JSON levels below its parent (fields, field, union, record).
        if json_depth(definition) > 4 * max_depth:
            raise UsageError(f"invalid Avro schema: nested deeper than --max-depth {max_depth}")
        try:
            self.parsed = fastavro.parse_schema(copy.deepcopy(definition))
            canonical = to_parsing_canonical_form(self.parsed)
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise UsageError(f"invalid Avro schema: {exc}") from None
        self.definition = definition
        # CRC-64-AVRO of the Parsing Canonical Form, as the single-object encoding carries it
        # (little-endian).  fastavro's hex is of those little-endian bytes, not of the number.
        self.fingerprint: int = int.from_bytes(
            bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")), "little")
        self.registry_id = registry_id
        self.name = _full_name(definition)
        self.text = json.dumps(definition, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"Schema({self.name}, fingerprint={self.fingerprint:016x}, id={self.registry_id})"


def json_depth(document: Any) -> int:
    """How deep dicts and lists nest in ``document`` (walked without recursion)."""
    deepest = 0
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node)
    return deepest


def _full_name(definition: Any) -> str:
    if isinstance(definition, dict):
        name = definition.get("name", definition.get("type", "?"))
        namespace = definition.get("namespace")
        return f"{namespace}.{name}" if namespace and "." not in name else str(name)
    if isinstance(definition, list):
        return "union"
    return str(definition)


class SchemaStore:
    """Every schema a run knows, found by OCF header text, registry id or fingerprint.

    ``default`` is the schema the user named (``--schema``): the writer schema of schemaless
    payloads and of JSON input.  ``reader`` (``--reader-schema``) is the shape every decoded
    record is resolved into.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.default: Schema | None = None
        self.reader: Schema | None = None
        self._by_text: dict[bytes, Schema] = {}
        self._by_definition: dict[str, Schema] = {}
        self._by_id: dict[int, Schema] = {}
        self._by_fingerprint: dict[int, Schema] = {}
        self._id_resolvers: list[Any] = []

    def add(self, schema: Schema) -> Schema:
        self._by_fingerprint.setdefault(schema.fingerprint, schema)
        if schema.registry_id is not None:
            self._by_id.setdefault(schema.registry_id, schema)
        return schema

    def from_header_text(self, text: bytes) -> Schema:
        """The schema of an OCF header, parsed the first time this exact text is seen."""
        schema = self._by_text.get(text)
        if schema is None:
            try:
                definition = json.loads(text)
                too_deep = json_depth(definition) > 4 * self.limits.max_depth
            except ValueError as exc:
                raise BadInput(f"OCF header holds a schema that is not JSON: {exc}") from None
            except RecursionError:  # deeper than the JSON parser follows
                too_deep = True
            if too_deep:
                raise BadInput("OCF header holds a schema nested deeper than --max-depth "
                               f"{self.limits.max_depth}")
            # Different writers embed the same schema with different whitespace or key order.  Not
            # the fingerprint: the Parsing Canonical Form drops logical types and decimal scales,
            # and schemas differing only in those decode the same bytes to different values.
            key = json.dumps(definition, sort_keys=True, separators=(",", ":"))
            schema = self._by_definition.get(key)
            if schema is None:
                try:
                    schema = Schema(definition, max_depth=self.limits.max_depth)
                except UsageError as exc:  # the schema came with the data: bad input
                    raise BadInput(f"OCF header holds an {exc.message}") from None
                self._by_definition[key] = schema
                self._by_fingerprint.setdefault(schema.fingerprint, schema)
            self._by_text[text] = schema
        return schema

    def add_id_resolver(self, resolver: Any) -> None:
        """Add an object whose ``schema_for_id(int) -> definition | None`` finds unknown ids."""
        self._id_resolvers.append(resolver)

    def by_id(self, schema_id: int) -> Schema | None:
        schema = self._by_id.get(schema_id)
        if schema is None:
            for resolver in self._id_resolvers:
                definition = resolver.schema_for_id(schema_id)
                if definition is not None:
                    schema = self.add(Schema(definition, registry_id=schema_id))
                    self._by_id[schema_id] = schema
                    break
        return schema

    def by_fingerprint(self, value: int) -> Schema | None:
        return self._by_fingerprint.get(value)


def load_schema_path(path: str | os.PathLike[str], registry_id: int | None = None) -> Schema:
    """Load ``FILE.avsc`` or a folder of ``.avsc`` files whose named types span several files.

    A file may name types defined in its sibling files (ZTF's alert.avsc names ztf.alert.candidate
    from candidate.avsc).  From a folder, the root is the one schema no other one refers to.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.avsc"))
        if not files:
            raise UsageError(f"{path}: no .avsc files in this folder")
        root = None
    elif path.is_file():
        files = sorted(path.parent.glob("*.avsc")) if path.suffix == ".avsc" else [path]
        root = path
    else:
        raise UsageError(f"{path}: no such schema file or folder")
    definitions = {}
    for file in files:
        try:
            definitions[file] = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if file == root:
                raise UsageError(f"{file}: not a JSON Avro schema: {exc}") from None
    named = _named_definitions(definitions.values())
    if root is None:
        referenced = {ref for d in definitions.values() for ref in _references(d, _namespace(d))}
        roots = [f for f, d in definitions.items() if _full_name(d) not in referenced]
        if len(roots) != 1:
            names = ", ".join(f.name for f in roots) or "none"
            raise UsageError(f"{path}: cannot tell which schema is the root (candidates: {names});"
                             " name the file instead of the folder")
        root = roots[0]
    return Schema(inline_named_types(definitions[root], named), registry_id=registry_id)


def _namespace(definition: Any) -> str | None:
    if isinstance(definition, dict):
        name = definition.get("name", "")
        if "." in name:
            return name.rsplit(".", 1)[0]
        return definition.get("namespace")
    return None


def _qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _named_definitions(definitions: Iterable[Any]) -> dict[str, Any]:
    """Every named type defined anywhere in ``definitions``, by full name."""
    named: dict[str, Any] = {}

    def visit(node: Any, namespace: str | None) -> None:
        if isinstance(node, list):
            for branch in node:
                visit(branch, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                full = _qualify(node["name"], node.get("namespace", namespace))
                named.setdefault(full, node)
                inner = full.rsplit(".", 1)[0] if "." in full else None
                for f in node.get("fields", ()):
                    visit(f["type"], inner)
            elif kind == "array":
                visit(node["items"], namespace)
            elif kind == "map":
                visit(node["values"], namespace)
            else:
                visit(kind, namespace)

    for definition in definitions:
        visit(definition, None)
    return named


def _references(node: Any, namespace: str | None) -> set[str]:
    """Full names of the named types ``node`` refers to without defining them."""
    found: set[str] = set()
    if isinstance(node, str):
        if node not in PRIMITIVES:
            found.add(_qualify(node, namespace))
    elif isinstance(node, list):
        for branch in node:
            found |= _references(branch, namespace)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error"):
            inner = _namespace(node) or namespace
            for f in node.get("fields", ()):
                found |= _references(f["type"], inner)
        elif kind == "array":
            found |= _references(node["items"], namespace)
        elif kind == "map":
            found |= _references(node["values"], namespace)
        elif kind not in ("enum", "fixed"):
            found |= _references(kind, namespace)
    return found


def inline_named_types(definition: Any, named: dict[str, Any]) -> Any:
    """A self-contained copy of ``definition``: each referenced type defined at its first use.

    An OCF header or a registry must carry a schema that parses on its own.
    """
    defined: set[str] = set()

    def visit(node: Any, namespace: str | None) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            full = _qualify(node, namespace)
            if full in defined:
                return full
            target = named.get(full) or named.get(node)
            if target is None:
                raise UsageError(f"schema refers to unknown type {full!r}; "
                                 "give the folder holding every .avsc file it needs")
            return visit(_with_namespace(target, full), namespace)
        if isinstance(node, list):
            return [visit(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        out = dict(node)
        if kind in ("record", "error", "enum", "fixed"):
            full = _qualify(node["name"], node.get("namespace", namespace))
            defined.add(full)
            inner = full.rsplit(".", 1)[0] if "." in full else None
            if kind in ("record", "error"):
                out["fields"] = [{**f, "type": visit(f["type"], inner)} for f in node["fields"]]
        elif kind == "array":
            out["items"] = visit(node["items"], namespace)
        elif kind == "map":
            out["values"] = visit(node["values"], namespace)
        elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVES):
            out["type"] = visit(kind, namespace)
        return out

    return visit(definition, _namespace(definition))


def _with_namespace(node: dict, full: str) -> dict:
    """``node`` renamed to its full name, so inlining it elsewhere keeps its identity."""
    if "." in node.get("name", "") or "." not in full:
        return node
    return {**node, "name": full.rsplit(".", 1)[1], "namespace": full.rsplit(".", 1)[0]}


def named_types(parsed: Any, index: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type of a schema parsed by fastavro, by its full name."""
    index = {} if index is None else index
    if isinstance(parsed, list):
        for branch in parsed:
            named_types(branch, index)
    elif isinstance(parsed, dict):
        kind = parsed["type"]
        if kind in ("record", "error", "enum", "fixed"):
            index[parsed["name"]] = parsed
            for f in parsed.get("fields", ()):
                named_types(f["type"], index)
        elif kind == "array":
            named_types(parsed["items"], index)
        elif kind == "map":
            named_types(parsed["values"], index)
    return index


_PROMOTIONS = {"int": ("long", "float", "double"), "long": ("float", "double"),
               "float": ("double",), "string": ("bytes",), "bytes": ("string",)}


def unreadable_field(writer: Schema, reader: Schema) -> str | None:
    """The path of the first field ``reader`` cannot read as ``writer`` wrote it, if any.

    fastavro's resolution errors name no field when a type changed ("schema mismatch: ['null',
    'int'] not found in int"); this walks both schemas by the Avro resolution rules to say where.
    """
    named_w, named_r = named_types(writer.parsed), named_types(reader.parsed)
    seen: set[tuple[str, str]] = set()

    def walk(w: Any, r: Any, path: str) -> str | None:
        w = named_w.get(w, w) if isinstance(w, str) else w
        r = named_r.get(r, r) if isinstance(r, str) else r
        if isinstance(w, list):  # any branch may hold the data
            return next((p for b in w if (p := walk(b, r, path)) is not None), None)
        if isinstance(r, list):
            found = [walk(w, b, path) for b in r]
            if None in found:
                return None
            return next((p for p in found if p != path), path)  # the deepest reason
        w_kind = w["type"] if isinstance(w, dict) else w
        r_kind = r["type"] if isinstance(r, dict) else r
        if w_kind != r_kind:
            return None if r_kind in _PROMOTIONS.get(w_kind, ()) else path
        if w_kind in ("record", "error", "enum", "fixed"):
            short = w["name"].rsplit(".", 1)[-1]
            aliases = r.get("aliases", ())
            if short != r["name"].rsplit(".", 1)[-1] and not {short, w["name"]} & set(aliases):
                return path
        if w_kind in ("record", "error"):
            if (w["name"], r["name"]) in seen:  # a recursive type, already being walked
                return None
            seen.add((w["name"], r["name"]))
            # In fastavro's order: the written fields, then the reader's own ones.
            by_name = {n: f for f in r["fields"] for n in (f["name"], *f.get("aliases", ()))}
            for f in w["fields"]:
                field = by_name.get(f["name"])
                if field is not None:
                    inner = f"{path}.{field['name']}" if path else field["name"]
                    if (found := walk(f["type"], field["type"], inner)) is not None:
                        return found
            written = {f["name"] for f in w["fields"]}
            for f in r["fields"]:
                if "default" not in f and not {f["name"], *f.get("aliases", ())} & written:
                    return f"{path}.{f['name']}" if path else f["name"]
            return None
        if w_kind == "array":
            return walk(w["items"], r["items"], f"{path}[]")
        if w_kind == "map":
            return walk(w["values"], r["values"], f"{path}{{}}")
        if w_kind == "enum" and not set(w["symbols"]) <= set(r["symbols"]) and "default" not in r:
            return path
        if w_kind == "fixed" and w["size"] != r["size"]:
            return path
        return None

    return walk(writer.parsed, reader.parsed, "")


def missing_fields(writer: Schema, reader: Schema) -> list[str]:
    """Paths of the fields ``reader`` has without a default and ``writer`` lacks: what keeps
    records of ``writer`` from being read as ``reader`` when only fields were added."""
    named_w, named_r = named_types(writer.parsed), named_types(reader.parsed)
    found: list[str] = []
    seen: set[tuple[str, str]] = set()

    def walk(w: Any, r: Any, path: str) -> None:
        w = named_w.get(w, w) if isinstance(w, str) else w
        r = named_r.get(r, r) if isinstance(r, str) else r
        if isinstance(w, list) or isinstance(r, list):
            for w_branch in (w if isinstance(w, list) else [w]):
                for r_branch in (r if isinstance(r, list) else [r]):
                    walk(w_branch, r_branch, path)
            return
        if not (isinstance(w, dict) and isinstance(r, dict)) or w["type"] != r["type"]:
            return
        if w["type"] == "array":
            walk(w["items"], r["items"], f"{path}[]")
        elif w["type"] == "map":
            walk(w["values"], r["values"], f"{path}{{}}")
        elif w["type"] in ("record", "error") and (w["name"], r["name"]) not in seen:
            seen.add((w["name"], r["name"]))
            written = {f["name"]: f for f in w["fields"]}
            for field in r["fields"]:
                inner = f"{path}.{field['name']}" if path else field["name"]
                source = next((written[n] for n in (field["name"], *field.get("aliases", ()))
                               if n in written), None)
                if source is not None:
                    walk(source["type"], field["type"], inner)
                elif "default" not in field and inner not in found:
                    found.append(inner)

    walk(writer.parsed, reader.parsed, "")
    return found


def zero_of(node: Any, named: dict[str, Any], namespace: str | None = None) -> Any:
    """The zero value of an Avro type (a schema definition), as a default says it in JSON:
    null, false, 0, "", the first enum symbol, empty arrays and maps, records of zeros; a
    union's first branch (the only one a default may take).  ``named``: every named type by
    full name (``_named_definitions``)."""
    if isinstance(node, list):
        return zero_of(node[0], named, namespace)
    if isinstance(node, str):
        if node in PRIMITIVES:
            return {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0,
                    "double": 0.0, "bytes": "", "string": ""}[node]
        full = _qualify(node, namespace)
        target = named.get(full) or named[node]
        return zero_of(target, named, full.rsplit(".", 1)[0] if "." in full else None)
    kind = node["type"]
    if kind in ("record", "error"):
        inner = _namespace(node) or namespace
        return {f["name"]: f["default"] if "default" in f else zero_of(f["type"], named, inner)
                for f in node["fields"]}
    if kind == "enum":
        return node["symbols"][0]
    if kind == "fixed":
        return "\u0000" * node["size"]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return zero_of(kind, named, namespace)


class FilledSchema(Schema):
    """A reader schema whose fields without a default get their type's zero (--fill-missing),
    counting, per field, the records it filled."""

    __slots__ = ("_missing", "counts", "original", "records")

    def __init__(self, reader: Schema) -> None:
        definition = copy.deepcopy(reader.definition)
        named = _named_definitions([definition])

        def fill(node: Any, namespace: str | None) -> None:
            if isinstance(node, list):
                for branch in node:
                    fill(branch, namespace)
            elif isinstance(node, dict):
                kind = node.get("type")
                if kind in ("record", "error"):
                    inner = _namespace(node) or namespace
                    for field in node["fields"]:
                        if "default" not in field:
                            field["default"] = zero_of(field["type"], named, inner)
                        fill(field["type"], inner)
                elif kind == "array":
                    fill(node["items"], namespace)
                elif kind == "map":
                    fill(node["values"], namespace)
                else:
                    fill(kind, namespace)

        fill(definition, _namespace(definition))
        super().__init__(definition, registry_id=reader.registry_id)
        self.original = reader  # the schema as given, whose missing fields are counted
        self.counts: dict[str, int] = {}  # records filled, by field path
        self.records = 0  # records with at least one field filled
        self._missing: dict[Schema, list[str]] = {}

    def count(self, writer: Schema) -> None:
        """One record of ``writer`` was read: count the fields it lacked."""
        missing = self._missing.get(writer)
        if missing is None:
            missing = self._missing[writer] = missing_fields(writer, self.original)
        if missing:
            self.records += 1
        for path in missing:
            self.counts[path] = self.counts.get(path, 0) + 1

    def report(self, shown: int = 5) -> str | None:
        """One short line saying what was filled, if anything was."""
        if not self.counts:
            return None
        fields = [f"{path} ({count})" for path, count in self.counts.items()]
        more = f" and {len(fields) - shown} more" if len(fields) > shown else ""
        return (f"--fill-missing gave {self.records} record{'s' if self.records != 1 else ''} "
                f"the zero of fields their schema lacks: {', '.join(fields[:shown])}{more}")


def resolution_error(writer: Schema, reader: Schema) -> BadInput:
    """One short line saying why records of ``writer`` cannot be read as ``reader``.

    fastavro's own messages may hold both schemas whole (ZTF's: ~100 kB on one line).
    """
    shown = f"{_version_of(writer)} cannot be read as {_version_of(reader)}"
    missing = missing_fields(writer, reader)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return BadInput(f"{shown}: field {missing[0]}{more} is not in the writer's schema and "
                        "has no default (--fill-missing gives it its type's zero)")
    field = unreadable_field(writer, reader)
    if field:
        return BadInput(f"{shown}: field {field} has a type the reader schema cannot resolve")
    return BadInput(f"{shown} (the Avro schema resolution rules refuse it)")


def _version_of(schema: Schema) -> str:
    version = schema.definition.get("version") if isinstance(schema.definition, dict) else None
    return f"schema {schema.name}" + (f" {version}" if version else "")


class RubinSchemaTree:
    """Rubin's schemas laid out as ``<root>/<major>/<minor>/lsst.v<major>_<minor>.alert.avsc``.

    Rubin's registry id is ``major * 100 + minor``; this resolves ids offline from the
    ``lsst-alert-packet`` package or any folder with that layout.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def schema_for_id(self, schema_id: int) -> Any:
        major, minor = divmod(schema_id, 100)
        file = self.root / str(major) / str(minor) / f"lsst.v{major}_{minor}.alert.avsc"
        if not file.is_file():
            return None
        return load_schema_path(file).definition

    @classmethod
    def from_package(cls) -> RubinSchemaTree | None:
        """The schema tree shipped by ``lsst-alert-packet``, when that extra is installed."""
        import importlib.util

        # Located, not imported: the package's __init__ pulls in numpy and more.
        try:
            spec = importlib.util.find_spec("lsst.alert.packet")
        except ImportError:
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return cls(Path(next(iter(spec.submodule_search_locations))) / "schema")


class RegistryClient:
    """A Confluent-compatible Schema Registry, queried once per id."""

    def __init__(self, url: str) -> None:
        from .registry import open_registry

        self._client = open_registry(url)

    def schema_for_id(self, schema_id: int) -> Any:
        text = self._client(schema_id)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise BadInput(f"registry schema {schema_id} is not JSON: {exc}") from None
