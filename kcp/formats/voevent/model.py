"""The VOEvent data model, compiled from the ``"xml"`` annotations of
``schemas/voevent/voevent.avsc``: the schema is the one description of what a packet holds."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...codec import Schema, load_schema_path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "voevent" / "voevent.avsc"
SCHEMA_NAME = "kcp.voevent.VOEvent"
VOEVENT_NAMESPACE = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
SCHEMA_LOCATION = f"{VOEVENT_NAMESPACE} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
INDENT = "  "
FRAGMENT = "#"  # an ``order`` entry taking the next of ``extra.fragments``


@functools.cache
def voevent_schema() -> Schema:
    """The VOEvent record schema, loaded once."""
    return load_schema_path(SCHEMA_PATH)


# -- the data model, compiled from the schema's "xml" annotations ------------------------------
@dataclass(eq=False)
class Spec:
    """How one element maps onto one record."""

    attributes: frozenset[str] = frozenset()
    attribute_order: tuple[str, ...] = ()
    children: dict[str, Child] = field(default_factory=dict)  # by XML name, in schema order
    rank: dict[str, int] = field(default_factory=dict)  # a child's place in the default order
    text: str | None = None  # the field holding simple content (EventIVORN)
    arrays: tuple[str, ...] = ()
    template: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Child:
    name: str
    kind: str  # "leaf" (text), "record" or "rows" (Table/Data)
    many: bool
    spec: Spec | None = None


def _compile(definition: dict, specs: dict[str, Spec]) -> Spec:
    spec = specs[definition["name"]] = Spec()
    attributes = []
    arrays = []
    for f in definition["fields"]:
        name, kind, avro_type = f["name"], f.get("xml"), f["type"]
        spec.template[name] = f.get("default")
        many = isinstance(avro_type, dict) and avro_type.get("type") == "array"
        if many:
            arrays.append(name)
        if kind == "attribute":
            attributes.append(name)
        elif kind == "text":
            spec.text = name
        elif kind == "rows":
            spec.children[name] = Child(name, "rows", False)
        elif kind == "element":
            target = avro_type["items"] if many else next(b for b in avro_type if b != "null")
            if target == "string":
                spec.children[name] = Child(name, "leaf", many)
            else:
                # A type used again is named, maybe in full (kcp.voevent.Reference).
                inner = (specs[target.rsplit(".", 1)[-1]] if isinstance(target, str)
                         else _compile(target, specs))
                spec.children[name] = Child(name, "record", many, inner)
    spec.attributes = frozenset(attributes)
    spec.attribute_order = tuple(attributes)
    spec.arrays = tuple(arrays)
    spec.rank = {name: i for i, name in enumerate(spec.children)}
    return spec


@functools.cache
def root_spec() -> Spec:
    return _compile(voevent_schema().definition, {})
