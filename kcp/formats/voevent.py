"""VOEvent: the IVOA's XML packets for transient events (GCN, LVK, SVOM, Gaia...), as Avro records.

Reading turns a packet into a record of ``schemas/voevent/voevent.avsc``: typed fields named as in
the standard (``.What.Param[].value``), plus an ``extra`` escape hatch on every element and a
``document`` on the root, so that writing the record reproduces the packet (docs/voevent.md says
exactly what is normalised).  Writing any other record (a ZTF, Rubin or other alert) maps it onto
a VOEvent 2.0 packet.  The converters are compiled from the schema's ``"xml"`` field annotations,
so the schema is the one description of the data model.

Packets come from the internet: lxml parses them with entities, DTDs and the network turned off,
a document with a DTD is refused outright, and each packet has a size limit.  lxml is imported
here only, and only when a packet is read or written (``kcp --help`` stays light).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import orjson

from ..codec import Schema, load_schema_path
from ..codec.schemas import named_types
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "voevent" / "voevent.avsc"
SCHEMA_NAME = "kcp.voevent.VOEvent"
VOEVENT_NAMESPACE = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
SCHEMA_LOCATION = f"{VOEVENT_NAMESPACE} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
CUTOUT_POLICIES = ("omit", "reference", "embed")
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


# -- reading ------------------------------------------------------------------------------------
_SPACE = re.compile(rb"\s*")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", '"': "&quot;", "\t": "&#9;",
                                    "\n": "&#10;", "\r": "&#13;"})
_NOT_XML_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NCNAME = r"[^\W\d][\w.\-]*"  # a name without a colon: a prefix, a local name
_XML_NAME = re.compile(rf"{_NCNAME}(?::{_NCNAME})?\Z")
_PREFIX = re.compile(rf"{_NCNAME}\Z")


def hardened_parser() -> Any:
    from lxml import etree

    # No entity substitution, no DTD loading or validation, no network, libxml2's default
    # limits on depth and text size (huge_tree off); comments and PIs kept for losslessness.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, collect_ids=False)


def parse_xml(data: bytes, parser: Any) -> Any:
    """The root element of ``data``, parsed safely; BadInput if it is not acceptable XML."""
    from lxml import etree

    if _dtd_in_prolog(data):
        raise BadInput(_DTD_REFUSED)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise BadInput(f"not well-formed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype:
        raise BadInput(_DTD_REFUSED)
    return root


_DTD_REFUSED = ("refused: the document has a DTD (<!DOCTYPE>); VOEvent packets need none, and kcp "
                "reads no DTD or entity from a packet")


# Encodings whose text is not ASCII bytes, told by a byte order mark or by how "<" is written.
_WIDE_ENCODINGS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
                   (b"<\x00\x00\x00", "utf-32-le"), (b"\x00\x00\x00<", "utf-32-be"),
                   (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                   (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be"))


def _dtd_in_prolog(data: bytes) -> bool:
    """Whether a DOCTYPE comes before the root: refused before lxml sees it, for a clear message
    (the parser is hardened anyway, and a DTD found after parsing is refused too)."""
    for mark, encoding in _WIDE_ENCODINGS:
        if data.startswith(mark):
            data = data.decode(encoding, errors="replace").encode("utf-8")
            break
    position = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while True:
        position = _SPACE.match(data, position).end()
        for opener, closer in ((b"<?", b"?>"), (b"<!--", b"-->")):
            if data.startswith(opener, position):
                end = data.find(closer, position + len(opener))
                if end < 0:
                    return False
                position = end + len(closer)
                break
        else:
            return data.startswith(b"<!DOCTYPE", position)


def _escape_text(text: str) -> str:
    return text.translate(_TEXT_ESCAPES)


class _PacketReader:
    """Turns one parsed packet into its record."""

    def __init__(self, root: Any, data: bytes) -> None:
        self.root_namespace = root.tag[1:].split("}", 1)[0] if root.tag[0] == "{" else None
        # Children of a prefixed root are unqualified (as the XSD says); under a default
        # namespace they inherit it.  Children in any other namespace are kept as fragments.
        default_namespaced = root.prefix is None and self.root_namespace is not None
        self.child_prefix = "{" + self.root_namespace + "}" if default_namespaced else ""
        # Namespace declarations below the root are rare: look for them only when the text has
        # more "xmlns" than the root declares (or is not ASCII-compatible).
        self.nested_namespaces = (b"\x00" in data[:4]
                                  or data.count(b"xmlns") != len(root.nsmap))

    def packet(self, root: Any) -> dict[str, Any]:
        from lxml import etree

        own = root.prefix
        declared = {("xmlns:" + p if p else "xmlns"): uri for p, uri in root.nsmap.items()
                    if not (p == own and uri == self.root_namespace)}
        record = self.element(root, root_spec(), declared)
        record["document"] = {
            "namespace": self.root_namespace, "prefix": own,
            "prolog": [etree.tostring(n, encoding="unicode")
                       for n in reversed(list(root.itersiblings(preceding=True)))],
            "epilog": [etree.tostring(n, encoding="unicode") for n in root.itersiblings()],
        }
        return record

    def _local(self, tag: Any) -> str | None:
        """The name of a child element in the packet's namespace, else None."""
        if not isinstance(tag, str):
            return None  # a comment or processing instruction
        prefix = self.child_prefix
        if prefix:
            return tag[len(prefix):] if tag.startswith(prefix) else None
        return None if tag[0] == "{" else tag

    def _declared_here(self, element: Any) -> dict[str, str]:
        parent = element.getparent()
        inherited = parent.nsmap if parent is not None else {}
        return {("xmlns:" + p if p else "xmlns"): uri for p, uri in element.nsmap.items()
                if inherited.get(p) != uri}

    def _declares(self, element: Any) -> bool:
        """Whether an element declares namespaces of its own (a text-only one then stays XML)."""
        return self.nested_namespaces and bool(self._declared_here(element))

    def element(self, element: Any, spec: Spec, declared: dict[str, str] | None = None
                ) -> dict[str, Any]:
        from lxml import etree

        record = spec.template.copy()
        for name in spec.arrays:
            record[name] = []
        others: dict[str, str] = dict(declared) if declared else {}
        if declared is None and self.nested_namespaces:
            others.update(self._declared_here(element))
        for key, value in element.items():
            if key in spec.attributes:
                record[key] = value
            else:
                others[_qualified_name(element, key)] = value
        if spec.text is not None:
            record[spec.text] = element.text or ""
            if others:
                record["extra"] = {"attributes": others, "fragments": [], "order": None}
            return record
        fragments: list[str] = []
        order: list[str] = []
        in_order = True
        last_rank = 0
        text = element.text
        # Whitespace between child nodes is insignificant; other text is kept, in place.
        if text and (len(element) == 0 or not text.isspace()):
            fragments.append(_escape_text(text))
            order.append(FRAGMENT)
            last_rank = len(spec.rank)
        for node in element:
            local = self._local(node.tag)
            child = spec.children.get(local) if local is not None else None
            value = None
            if child is not None and (child.many or record[child.name] is None):
                value = self._child_value(node, child)
            if value is not None:
                if child.many:
                    record[child.name].append(value)
                else:
                    record[child.name] = value
                order.append(child.name)
                rank = spec.rank[child.name]
            else:
                fragments.append(etree.tostring(node, encoding="unicode", with_tail=False))
                order.append(FRAGMENT)
                rank = len(spec.rank)
            if rank < last_rank:
                in_order = False
            last_rank = rank
            tail = node.tail
            if tail and not tail.isspace():
                fragments.append(_escape_text(tail))
                order.append(FRAGMENT)
                last_rank = len(spec.rank)
        if others or fragments or not in_order:
            record["extra"] = {"attributes": others, "fragments": fragments,
                               "order": None if in_order else order}
        return record

    def _child_value(self, node: Any, child: Child) -> Any:
        """The typed value of a child element, or None when it must stay a fragment."""
        if child.kind == "record":
            if child.spec.text is not None and len(node):
                return None
            return self.element(node, child.spec)
        if child.kind == "rows":
            return self._rows(node)
        if len(node) or node.attrib or self._declares(node):
            return None
        return node.text or ""

    def _rows(self, data: Any) -> list[list[str]] | None:
        """Table/Data as a list of rows of cells, or None when it is not plain TR/TD."""
        if data.attrib or not _blank(data.text) or self._declares(data):
            return None
        rows = []
        for tr in data:
            if (self._local(tr.tag) != "TR" or tr.attrib or not _blank(tr.text)
                    or not _blank(tr.tail) or self._declares(tr)):
                return None
            cells = []
            for td in tr:
                if (self._local(td.tag) != "TD" or td.attrib or len(td)
                        or not _blank(td.tail) or self._declares(td)):
                    return None
                cells.append(td.text or "")
            rows.append(cells)
        return rows


def _blank(text: str | None) -> bool:
    return not text or text.isspace()


def _qualified_name(element: Any, key: str) -> str:
    """An attribute's name as the document writes it (``xsi:schemaLocation``)."""
    if key[0] != "{":
        return key
    uri, local = key[1:].split("}", 1)
    if uri == XML_NAMESPACE:
        return "xml:" + local
    for prefix, bound in element.nsmap.items():
        if bound == uri and prefix:
            return f"{prefix}:{local}"
    raise BadInput(f"attribute {local} is in namespace {uri}, which has no prefix")


def read_packet(data: bytes, parser: Any) -> dict[str, Any]:
    """The VOEvent record of one packet."""
    root = parse_xml(data, parser)
    tag = root.tag if isinstance(root.tag, str) else ""
    if tag.rsplit("}", 1)[-1] != "VOEvent":
        raise BadInput(f"not a VOEvent packet: the root element is <{tag.rsplit('}', 1)[-1]}>")
    return _PacketReader(root, data).packet(root)


# -- writing ------------------------------------------------------------------------------------
class _PacketWriter:
    """Writes one record as XML text, indenting wherever that cannot change the content."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.fragments = False  # raw XML was copied in: check the result is well-formed

    def element(self, name: str, spec: Spec, record: Any, depth: int,
                declarations: dict[str, str] | None = None) -> None:
        if not isinstance(record, dict):
            raise BadInput(f"<{name}>: expected an object, got {type(record).__name__}")
        out = self.out
        out.append("<" + name)
        extra = record.get("extra") or {}
        others = extra.get("attributes")
        # Namespace declarations first, as people write them (C14N does not mind the order).
        for key, value in (declarations or {}).items():
            out.append(f' {key}="{_attribute(value, name)}"')
        if others:
            self._attributes(name, {k: v for k, v in others.items() if k.startswith("xmlns")})
        for key in spec.attribute_order:
            value = record.get(key)
            if value is not None:
                out.append(f' {key}="{_attribute(value, name)}"')
        if others:
            self._attributes(name, {k: v for k, v in others.items()
                                    if not k.startswith("xmlns")})
        if spec.text is not None:
            content = _text(record.get(spec.text), name)
            out.append(f">{content}</{name}>" if content else "/>")
            return
        if extra.get("order") or extra.get("fragments"):
            children = list(self._children(spec, record, extra))
        else:
            children = []
            for field_name, child in spec.children.items():
                value = record.get(field_name)
                if value is None:
                    continue
                if child.many and isinstance(value, list):
                    children += [(child, v) for v in value if v is not None]
                else:  # a single value, also where JSON edited by hand gives one for a list
                    children.append((child, value))
        if not children:
            out.append("/>")
            return
        out.append(">")
        # Text among the children is content: indenting next to it would change it.
        mixed = any(c is None and not v.startswith("<") for c, v in children)
        inner = "" if mixed else "\n" + INDENT * (depth + 1)
        for child, value in children:
            out.append(inner)
            if child is None:
                self.fragments = True
                out.append(value)
            elif child.kind == "leaf":
                content = _text(value, child.name)
                out.append(f"<{child.name}>{content}</{child.name}>" if content
                           else f"<{child.name}/>")
            elif child.kind == "record":
                self.element(child.name, child.spec, value, depth + 1)
            else:
                self._rows(value, depth + 1)
        out.append(("" if mixed else "\n" + INDENT * depth) + f"</{name}>")

    def _attributes(self, name: str, attributes: dict[str, Any]) -> None:
        for key, value in attributes.items():
            if not _XML_NAME.match(key):
                raise BadInput(f"<{name}>: {key!r} is not an attribute name")
            self.out.append(f' {key}="{_attribute(value, name)}"')

    def _children(self, spec: Spec, record: dict, extra: dict) -> Iterator[tuple[Any, Any]]:
        """(Child, value) in the order ``extra.order`` gives; (None, xml) for a fragment."""
        items = {}
        for name, child in spec.children.items():
            value = record.get(name)
            if child.many and isinstance(value, list):
                items[name] = [v for v in value if v is not None]
            else:
                items[name] = [] if value is None else [value]
        fragments = list(extra.get("fragments") or ())
        if not all(isinstance(f, str) for f in fragments):
            raise BadInput("extra.fragments must hold XML text")
        taken = dict.fromkeys(items, 0)
        next_fragment = 0
        for token in extra.get("order") or ():
            if token == FRAGMENT:
                if next_fragment < len(fragments):
                    yield None, fragments[next_fragment]
                    next_fragment += 1
            elif token in taken and taken[token] < len(items[token]):
                yield spec.children[token], items[token][taken[token]]
                taken[token] += 1
        # Without an order (or with one that does not cover everything, after an edit), the
        # rest go in schema order, then the remaining fragments.
        for name, values in items.items():
            for value in values[taken[name]:]:
                yield spec.children[name], value
        for fragment in fragments[next_fragment:]:
            yield None, fragment

    def _rows(self, rows: Any, depth: int) -> None:
        out = self.out
        if not rows:
            out.append("<Data/>")
            return
        inner = "\n" + INDENT * (depth + 1)
        out.append("<Data>")
        for row in rows:
            if not isinstance(row, list):
                raise BadInput("<Data>: each row must be a list of cells")
            out.append(inner + "<TR>")
            out.extend(f"<TD>{c}</TD>" if (c := _text(cell, "TD")) else "<TD/>" for cell in row)
            out.append("</TR>")
        out.append("\n" + INDENT * depth + "</Data>")


def _text(value: Any, where: str) -> str:
    return _escape_text(_checked(value, where))


def _attribute(value: Any, where: str) -> str:
    return _checked(value, where).translate(_ATTRIBUTE_ESCAPES)


def _checked(value: Any, where: str) -> str:
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"<{where}>: expected text, got {type(value).__name__}")
        value = repr(value)
    bad = _NOT_XML_CHARACTER.search(value)
    if bad:
        raise BadInput(f"<{where}>: character U+{ord(bad.group()):04X} cannot be written in XML")
    return value


def write_packet(record: dict[str, Any], parser: Any) -> bytes:
    """The XML document of a VOEvent record."""
    document = record.get("document") or {"namespace": VOEVENT_NAMESPACE, "prefix": "voe"}
    namespace, prefix = document.get("namespace"), document.get("prefix")
    if prefix and not namespace:
        raise BadInput(f"document: prefix {prefix!r} without a namespace")
    if prefix is not None and not (isinstance(prefix, str) and _PREFIX.match(prefix)):
        raise BadInput(f"document: {prefix!r} is not a namespace prefix")
    declarations = {}
    if namespace:
        declarations["xmlns:" + prefix if prefix else "xmlns"] = namespace
    writer = _PacketWriter()
    out = writer.out
    out.append(DECLARATION)
    outside = [*(document.get("prolog") or ()), None, *(document.get("epilog") or ())]
    for item in outside:
        if item is None:
            writer.element(f"{prefix}:VOEvent" if prefix else "VOEvent", root_spec(), record, 0,
                           declarations)
        elif isinstance(item, str):
            writer.fragments = True
            out.append(item)
        else:
            raise BadInput("document.prolog and epilog must hold XML text")
        out.append("\n")
    text = "".join(out).encode("utf-8")
    if writer.fragments:
        try:
            parse_xml(text, parser)
        except BadInput as exc:
            raise BadInput(f"the record's XML fragments do not make a well-formed packet "
                           f"({exc.message})") from None
    return text


def is_voevent_record(message: Message) -> bool:
    """A record of the VOEvent schema, or JSON shaped like one (read without a schema)."""
    if message.schema is not None:
        return message.schema.name == SCHEMA_NAME
    datum = message.datum
    return isinstance(datum, dict) and "ivorn" in datum and "version" in datum


# -- alerts as VOEvents -------------------------------------------------------------------------
# Units (VOUnit) and UCDs (IVOA UCD1+) of ZTF alert fields, from the ZTF schema documentation.
_ZTF_UNITS = {
    "jd": "d", "jdstarthist": "d", "jdendhist": "d", "jdstartref": "d", "jdendref": "d",
    "ra": "deg", "dec": "deg", "ranr": "deg", "decnr": "deg",
    "xpos": "pix", "ypos": "pix", "fwhm": "pix", "aimage": "pix", "bimage": "pix",
    "mindtoedge": "pix", "distnr": "pix", "sciinpseeing": "pix",
    "ssdistnr": "arcsec", "distpsnr1": "arcsec", "distpsnr2": "arcsec", "distpsnr3": "arcsec",
    "neargaia": "arcsec", "neargaiabright": "arcsec", "adpctdif1": "arcsec",
    "adpctdif2": "arcsec", "exptime": "s", "zpclrcov": "mag**2",
    # The documentation's DN (data numbers) are what VOUnits calls adu.
    "sky": "adu", "forcediffimflux": "adu", "forcediffimfluxunc": "adu", "scibckgnd": "adu",
    "scisigpix": "adu",
    **dict.fromkeys((
        "magpsf", "sigmapsf", "magap", "sigmagap", "magnr", "sigmagnr", "magdiff", "magfromlim",
        "diffmaglim", "magapbig", "sigmagapbig", "ssmagnr", "sgmag1", "srmag1", "simag1",
        "szmag1", "sgmag2", "srmag2", "simag2", "szmag2", "sgmag3", "srmag3", "simag3", "szmag3",
        "magzpsci", "magzpsciunc", "magzpscirms", "zpmed", "clrmed", "clrrms", "maggaia",
        "maggaiabright"), "mag"),
}
# fp_hist measures distnr in arcsec where candidate and prv_candidate measure it in pixels.
_ZTF_FP_UNITS = {**_ZTF_UNITS, "distnr": "arcsec"}
_ZTF_UCDS = {
    "objectId": "meta.id;meta.main", "candid": "meta.id", "jd": "time.epoch",
    "ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main", "ranr": "pos.eq.ra",
    "decnr": "pos.eq.dec", "magpsf": "phot.mag", "sigmapsf": "stat.error;phot.mag",
    "magap": "phot.mag", "sigmagap": "stat.error;phot.mag", "magnr": "phot.mag",
    "sigmagnr": "stat.error;phot.mag", "fid": "instr.filter", "scorr": "stat.snr",
    "distnr": "pos.angDistance", "distpsnr1": "pos.angDistance", "ssdistnr": "pos.angDistance",
    "exptime": "time.duration;obs.exposure",
}
_RUBIN_UNITS = {"ra": "deg", "dec": "deg", "raErr": "deg", "decErr": "deg",
                "midpointMjdTai": "d", "psfFlux": "nJy", "psfFluxErr": "nJy",
                "scienceFlux": "nJy", "scienceFluxErr": "nJy"}
_RUBIN_UCDS = {"ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main",
               "midpointMjdTai": "time.epoch", "diaSourceId": "meta.id",
               "diaObjectId": "meta.id;meta.main", "alertId": "meta.id"}
_JD_UNIX_EPOCH = 2440587.5
_MJD_TO_JD = 2400000.5
_TT_MINUS_TAI_SECONDS = 32.184  # exact, by definition of TT
_FLOAT32 = struct.Struct("<f")


@dataclass
class _When:
    iso: str
    scale: str  # UTC or TT: the time part of an AstroCoordSystem id


class AlertMapper:
    """Maps an alert record of any schema onto a VOEvent 2.0 record (docs/voevent.md)."""

    def __init__(self, authority: str, cutouts: str) -> None:
        if not authority.startswith("ivo://") or len(authority) <= len("ivo://"):
            raise UsageError(f"--authority {authority!r}: an IVOA authority starts with ivo://")
        if cutouts not in CUTOUT_POLICIES:
            raise UsageError(f"--cutouts must be one of {', '.join(CUTOUT_POLICIES)}")
        self.authority = authority.rstrip("/#")
        self.cutouts = cutouts
        self._named: dict[int, dict[str, Any]] = {}

    def __call__(self, alert: Any, schema: Schema | None) -> dict[str, Any]:
        if not isinstance(alert, dict):
            raise BadInput(f"only records can be written as VOEvent, not {type(alert).__name__}")
        avro_type = schema.parsed if schema is not None else None
        if schema is not None:
            self._named.setdefault(schema.fingerprint, named_types(schema.parsed))
            names = self._named[schema.fingerprint]
        else:
            names = {}
        survey = _survey(alert)
        ivorn = f"{self.authority}#{quote(str(_alert_id(alert, survey)), safe='')}"
        position, when = _where_when(alert, survey)
        what = _WhatBuilder(survey, self.cutouts, names).build(alert, avro_type)
        who = {"AuthorIVORN": self.authority,
               "Date": when.iso if when is not None and when.scale == "UTC" else _now(),
               "Description": f"Converted by kcp from {_SURVEY_TEXT[survey]}"}
        record: dict[str, Any] = {
            "ivorn": ivorn, "role": "observation", "version": "2.0", "Who": who,
            "document": {"namespace": VOEVENT_NAMESPACE, "prefix": "voe"},
            "extra": {"attributes": {"xmlns:xsi": XSI_NAMESPACE,
                                     "xsi:schemaLocation": SCHEMA_LOCATION}},
        }
        if what["Param"] or what["Group"] or what["Table"]:
            record["What"] = what
        if position is not None or when is not None:
            record["WhereWhen"] = _where_when_record(position, when)
        return record


_SURVEY_TEXT = {"ztf": "a ZTF alert", "rubin": "a Rubin alert", "other": "an alert"}


def _survey(alert: dict) -> str:
    candidate = alert.get("candidate")
    if isinstance(candidate, dict) and "jd" in candidate and "magpsf" in candidate:
        return "ztf"
    if isinstance(alert.get("diaSource"), dict):
        return "rubin"
    return "other"


def _alert_id(alert: dict, survey: str) -> Any:
    if survey == "ztf":
        candid = alert.get("candid", alert["candidate"].get("candid"))
        if candid is not None:
            return candid
    if survey == "rubin":
        for value in (alert.get("alertId"), alert["diaSource"].get("diaSourceId")):
            if value is not None:
                return value
    found = _first_id(alert)
    if found is not None:
        return found
    # No id field at all: a digest of the content still names this alert and only this one.
    return hashlib.sha256(orjson.dumps(alert, default=_json_default,
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


def _first_id(record: dict) -> Any:
    """The first integer field named ...id / ...Id, looking at a record before its children."""
    for name, value in record.items():
        if name.lower().endswith("id") and isinstance(value, int) and not isinstance(value, bool):
            return value
    for value in record.values():
        if isinstance(value, dict):
            found = _first_id(value)
            if found is not None:
                return found
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _where_when(alert: dict, survey: str) -> tuple[tuple[float, float, float] | None,
                                                     _When | None]:
    """((ra, dec, error radius) in degrees, time) of an alert, where it has them."""
    if survey == "ztf":
        source = alert["candidate"]
    elif survey == "rubin":
        source = alert["diaSource"]
    else:
        source = _record_with_position(alert) or alert
    position = None
    ra = _number(source.get("ra"))
    dec = _number(source.get("dec", source.get("decl")))
    if ra is not None and dec is not None and math.isfinite(ra) and math.isfinite(dec):
        errors = [e for e in (_number(source.get(k)) for k in
                              ("raErr", "decErr", "declErr", "sigmara", "sigmadec"))
                  if e is not None and math.isfinite(e)]
        position = (ra, dec, max(errors) if errors else 0.0)
    return position, _time_of(source) or _time_of(alert)


def _record_with_position(record: dict) -> dict | None:
    if "ra" in record and ("dec" in record or "decl" in record):
        return record
    for value in record.values():
        if isinstance(value, dict):
            found = _record_with_position(value)
            if found is not None:
                return found
    return None


def _time_of(record: dict) -> _When | None:
    jd = _number(record.get("jd"))
    if jd is not None and math.isfinite(jd):
        return _When(_iso_from_jd(jd), "UTC")
    mjd = _number(record.get("mjd"))
    if mjd is not None and math.isfinite(mjd):
        return _When(_iso_from_jd(mjd + _MJD_TO_JD), "UTC")
    for name in ("midpointMjdTai", "midPointTai"):
        tai = _number(record.get(name))
        if tai is not None and math.isfinite(tai):
            # TT is TAI + 32.184 s exactly; VOEvent 2.0 has TT systems but no TAI one.
            tt = tai + _MJD_TO_JD + _TT_MINUS_TAI_SECONDS / 86400
            return _When(_iso_from_jd(tt), "TT")
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _iso_from_jd(jd: float) -> str:
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(
        milliseconds=round((jd - _JD_UNIX_EPOCH) * 86_400_000))
    return moment.isoformat(timespec="milliseconds")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _where_when_record(position: tuple[float, float, float] | None, when: _When | None
                       ) -> dict[str, Any]:
    system = f"{when.scale if when is not None else 'UTC'}-ICRS-TOPO"
    coords: dict[str, Any] = {"coord_system_id": system}
    if when is not None:
        coords["Time"] = {"unit": "s", "TimeInstant": {"ISOTime": when.iso}}
    descriptions = []
    if position is not None:
        ra, dec, error = position
        coords["Position2D"] = {"unit": "deg", "Name1": "RA", "Name2": "Dec",
                                "Value2": {"C1": repr(ra), "C2": repr(dec)},
                                "Error2Radius": repr(error)}
        if not error:
            descriptions.append("The alert gives no position uncertainty: Error2Radius is 0.")
    return {"ObsDataLocation": {
                "ObservatoryLocation": {"id": "GEOSURFACE"},
                "ObservationLocation": {"AstroCoordSystem": {"id": system},
                                        "AstroCoords": coords}},
            "Description": descriptions}


class _WhatBuilder:
    """What: a Param per scalar field, a Group per nested record, a Table per list of records."""

    def __init__(self, survey: str, cutouts: str, names: dict[str, Any]) -> None:
        self.survey = survey
        self.cutouts = cutouts
        self.names = names
        self.groups: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []

    def build(self, alert: dict, avro_type: Any) -> dict[str, Any]:
        params = self._record(alert, self._resolve(avro_type, dict), "")
        return {"Param": params, "Group": self.groups, "Table": self.tables}

    def _resolve(self, avro_type: Any, container: type) -> Any:
        """The record, map or array definition ``avro_type`` (maybe a union, a name) holds."""
        if isinstance(avro_type, list):
            for branch in avro_type:
                resolved = self._resolve(branch, container)
                if (isinstance(resolved, dict)
                        and _CONTAINERS.get(resolved.get("type")) is container):
                    return resolved
            return None
        if isinstance(avro_type, str):
            return self.names.get(avro_type)
        return avro_type

    def _fields(self, record: dict, avro_type: Any) -> Iterator[tuple[str, Any, Any]]:
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            for f in avro_type["fields"]:
                value = record.get(f["name"])
                yield f["name"], value, f["type"]
        else:
            for name, value in record.items():
                yield name, value, None

    def _record(self, record: dict, avro_type: Any, path: str) -> list[dict[str, Any]]:
        """The Params of a record's scalar fields; its records and lists go elsewhere."""
        params = []
        for name, value, field_type in self._fields(record, avro_type):
            full = f"{path}.{name}" if path else name
            if value is None:
                continue
            if isinstance(value, (bytes, bytearray)):
                params += self._cutout(name, value, None)
            elif isinstance(value, dict):
                blob = next((v for v in value.values() if isinstance(v, (bytes, bytearray))),
                            None)
                if blob is not None:
                    file_name = next((v for v in value.values() if isinstance(v, str)), None)
                    params += self._cutout(name, blob, file_name)
                else:
                    self._group(value, self._resolve(field_type, dict), full)
            elif isinstance(value, list):
                array = self._resolve(field_type, list)
                items_type = array.get("items") if array is not None else None
                if value and all(isinstance(v, dict) for v in value):
                    self._table(value, self._resolve(items_type, dict), full)
                elif value:
                    float32 = _is_float32(items_type)
                    text = " ".join(_format(v, float32) for v in value)
                    params.append(self._param(name, text, value[0], full))
            else:
                params.append(self._param(name, _format(value, _is_float32(field_type)), value,
                                          full))
        return params

    def _group(self, record: dict, avro_type: Any, path: str) -> None:
        # Groups do not nest in VOEvent: records inside this one become Groups of their own.
        index = len(self.groups)
        params = self._record(record, avro_type, path)
        if params:
            self.groups.insert(index, {"name": _clean(path), "Param": params})

    def _param(self, name: str, text: str, value: Any, path: str) -> dict[str, Any]:
        units, ucds = self._vocabulary(path)
        return {"name": _clean(name), "value": text, "unit": units.get(name),
                "ucd": ucds.get(name), "dataType": _data_type(value)}

    def _vocabulary(self, path: str) -> tuple[dict[str, str], dict[str, str]]:
        if self.survey == "ztf":
            return (_ZTF_FP_UNITS if path.startswith("fp_hists") else _ZTF_UNITS), _ZTF_UCDS
        if self.survey == "rubin":
            return _RUBIN_UNITS, _RUBIN_UCDS
        return {}, {}

    def _table(self, rows: list[dict], item_type: Any, path: str) -> None:
        columns: dict[str, bool] = {}  # name -> whether it holds 32-bit floats
        if item_type is not None and item_type.get("type") == "record":
            for f in item_type["fields"]:
                columns[f["name"]] = _is_float32(f["type"])
        for row in rows:
            for name in row:
                columns.setdefault(name, False)
        # Only scalar columns: a VOEvent table cell is text.
        samples = {name: next((r.get(name) for r in rows if r.get(name) is not None), None)
                   for name in columns}
        names = [n for n in columns if not isinstance(samples[n], (bytes, bytearray, dict, list))]
        if not names:
            return
        units, ucds = self._vocabulary(path)
        fields = [{"name": _clean(n), "unit": units.get(n), "ucd": ucds.get(n),
                   "dataType": _data_type(samples[n])} for n in names]
        float32 = [columns[n] for n in names]
        data = [[_format(value, f32) if (value := row.get(name)) is not None else ""
                 for name, f32 in zip(names, float32, strict=True)] for row in rows]
        self.tables.append({"name": _clean(path), "Field": fields, "Data": data})

    def _cutout(self, name: str, blob: bytes, file_name: str | None) -> list[dict[str, Any]]:
        if self.cutouts == "omit":
            return []
        name = _clean(name)
        what = f"{_clean(file_name)}, " if file_name else ""
        if self.cutouts == "reference":
            return [{"name": name, "value": _clean(file_name or ""), "dataType": "string",
                     "Description": [f"{what}{len(blob)} bytes, left in the alert"]}]
        return [{"name": name, "dataType": "string",
                 "Value": base64.b64encode(blob).decode("ascii"),
                 "Description": [f"{what}{len(blob)} bytes, base64-encoded in Value"]}]


_CONTAINERS = {"record": dict, "map": dict, "array": list}


def _is_float32(avro_type: Any) -> bool:
    """Whether a field of this type holds 32-bit floats (written in fewer digits)."""
    if isinstance(avro_type, list):
        return "float" in avro_type
    if isinstance(avro_type, dict):
        return avro_type.get("type") == "float"
    return avro_type == "float"


def _data_type(value: Any) -> str:
    if isinstance(value, bool):
        return "string"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _format(value: Any, float32: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
        return _float32_text(value) if float32 else repr(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=_json_default).decode()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return _clean(value) if isinstance(value, str) else str(value)


def _float32_text(value: float) -> str:
    """The shortest text that reads back as the same 32-bit float (19.30335, not 19.303354263)."""
    for digits in (6, 7, 8):
        text = f"{value:.{digits}g}"
        if _FLOAT32.unpack(_FLOAT32.pack(float(text)))[0] == value:
            return text
    return f"{value:.9g}"


def _clean(text: str) -> str:
    """Text XML can hold: characters it cannot are replaced by U+FFFD."""
    return _NOT_XML_CHARACTER.sub("\ufffd", text)


# -- streams of packets -------------------------------------------------------------------------
# Markup that matters for finding where a document ends and the next begins: an XML declaration
# starts a document once the current one has an element; inside comments, CDATA and processing
# instructions "<?xml" means nothing.
_MARKUP = re.compile(rb"<(?:!--|!\[CDATA\[|\?|[^!?/])")
_SKIPPED_MARKUP = re.compile(rb"<(?:!--|!\[CDATA\[|\?)")
_DECLARATION_START = re.compile(rb"<\?xml[\s?]")
_ENDS = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
_CHUNK = 1 << 16


def split_documents(stream: BinaryIO, limit: int
                    ) -> Iterator[tuple[bytes | None, int, bool]]:
    """(document, its number, whether it is the last) for each XML document of a stream.

    Documents are cut where a new XML declaration begins after the current document's first
    element (how ``--to voevent`` writes streams).  A document longer than ``limit`` bytes comes
    out as None, and no more than about ``limit`` bytes of it are held in memory.
    """
    buffer = bytearray()
    start = position = 0  # the current document starts at ``start``; scanned up to ``position``
    closer = None  # inside a comment, CDATA section or PI: what ends it
    seen_element = too_big = eof = False
    number = 0
    while True:
        if closer is not None:
            end = buffer.find(closer, position)
            if end >= 0:
                position, closer = end + len(closer), None
                continue
            position = max(position, len(buffer) - len(closer) + 1)  # a closer cut in two
        else:
            found = (_SKIPPED_MARKUP if seen_element else _MARKUP).search(buffer, position)
            if found is None:
                position = max(position, len(buffer) - len(b"<![CDATA["))  # an opener cut in two
            elif found.group()[1:2] not in (b"!", b"?"):
                seen_element = True
                position = found.end()
                continue
            elif found.group() == b"<?" and len(buffer) - found.start() < 6 and not eof:
                position = found.start()  # "<?xml " cut in two: read on before deciding
            elif (found.group() == b"<?" and seen_element
                  and _DECLARATION_START.match(buffer, found.start())):
                number += 1
                yield (None if too_big else bytes(buffer[start:found.start()])), number, False
                start = found.start()
                position = found.end()
                seen_element = too_big = False
                continue
            else:
                closer = _ENDS[found.group()]
                position = found.end()
                continue
        if eof:
            break
        # Need more input.  Everything up to ``position`` belongs to the current document.
        too_big = too_big or position - start > limit
        # Drop what is done with (all of an oversized document), then read.
        del buffer[:position if too_big else start]
        position -= position if too_big else start
        start = 0
        chunk = stream.read(_CHUNK)
        if not chunk:
            eof = True
            continue
        buffer += chunk
    if too_big or buffer[start:].strip():
        number += 1
        yield (None if too_big else bytes(buffer[start:])), number, True


# -- the format ---------------------------------------------------------------------------------
class VoeventReader:
    """VOEvent packets: one per payload; files and streams hold one or several."""

    def __init__(self, options: Options) -> None:
        self.limit = options.max_xml_bytes
        self.parser = hardened_parser()

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a VOEvent packet was expected")
        schema = voevent_schema()
        # read_stream parsed it already, to refuse bad packets even when bytes pass untouched.
        if message.datum is None or message.schema is not schema:
            message.datum = self._read(message.value)
            message.schema = schema
        message.decoded = True
        return [message]

    def _read(self, data: bytes) -> dict[str, Any]:
        if len(data) > self.limit:
            raise self._too_big()
        return read_packet(data, self.parser)

    def _too_big(self) -> BadInput:
        return BadInput(f"packet is over the limit of {self.limit:,} bytes (--max-xml-bytes)")

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        # Messages stay undecoded (bytes go to Kafka as they are) but carry their parsed record,
        # which decode() then uses.
        for data, number, last in split_documents(stream, self.limit):
            position = None if number == 1 and last else f"document {number}"
            message = Message(value=data, source=source, position=position)
            try:
                if data is None:
                    raise self._too_big()
                message.datum = self._read(data)
                message.schema = voevent_schema()
            except BadInput as exc:
                message.error = exc.at(message.where())
            yield message


class VoeventWriter:
    """VOEvent records as the packets they were read from; other alerts mapped onto VOEvent."""

    def __init__(self, options: Options) -> None:
        self.map_alert = AlertMapper(options.authority, options.cutouts)
        self.parser = hardened_parser()

    def encode(self, message: Message) -> bytes:
        if message.datum is None:
            raise BadInput("no record to write as VOEvent (a tombstone?)")
        record = message.datum
        if not is_voevent_record(message):
            record = self.map_alert(record, message.schema)
        return write_packet(record, self.parser)

    def recover(self, stream: BinaryIO) -> None:
        cut_torn_document(stream, self.parser)

    def open_stream(self, stream: BinaryIO) -> VoeventStreamWriter:
        return VoeventStreamWriter(stream, self)


class VoeventStreamWriter:
    """Documents one after the other, each starting with its XML declaration on a new line."""

    encodes_alone = True

    def __init__(self, stream: BinaryIO, owner: VoeventWriter) -> None:
        self.stream = stream
        self.encode = owner.encode

    def write(self, message: Message) -> None:
        self.write_encoded(self.encode(message))

    def write_encoded(self, data: bytes) -> None:
        self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def cut_torn_document(stream: BinaryIO, parser: Any) -> None:
    """Truncate a stream of documents after its last complete one (a crashed writer's tail)."""
    size = stream.seek(0, 2)
    marker = b"\n<?xml"
    # Every document kcp writes starts a line with its declaration: find the last one.
    start = 0
    position = size
    while position > 0:
        window_start = max(0, position - _CHUNK)
        stream.seek(window_start)
        window = stream.read(min(size, position + len(marker)) - window_start)
        found = window.rfind(marker)
        if found >= 0:
            start = window_start + found + 1
            break
        position = window_start
    stream.seek(start)
    try:
        parse_xml(stream.read(), parser)
        end = size
    except BadInput:
        end = start
    stream.truncate(end)
    stream.seek(end)
