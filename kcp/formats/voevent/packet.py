"""One VOEvent packet <-> its record: parsed with a hardened lxml parser (no entities, no DTD,
no network), written back as it was read (docs/voevent.md says what is normalised)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ...errors import BadInput
from ...message import Message
from .model import (
    DECLARATION,
    FRAGMENT,
    INDENT,
    SCHEMA_NAME,
    VOEVENT_NAMESPACE,
    XML_NAMESPACE,
    Child,
    Spec,
    root_spec,
)

# -- reading ------------------------------------------------------------------------------------
_SPACE = re.compile(rb"\s*")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", '"': "&quot;", "\t": "&#9;",
                                    "\n": "&#10;", "\r": "&#13;"})
NOT_XML_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
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
        for key, value in _attributes_of(element):
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


def _attributes_of(element: Any) -> list[tuple[str, str]]:
    """An element's (name, value) attributes. lxml's ``items()`` looks each value up by its
    name along the element's attribute list, quadratic in their number (60,000 attributes took
    17 s); XPath's ``@*`` reads them in one pass, but costs more for the few of a usual one."""
    if len(element.attrib) <= 64:
        return element.items()  # type: ignore[no-any-return]
    return [(node.attrname, str(node)) for node in element.xpath("@*")]


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
    bad = NOT_XML_CHARACTER.search(value)
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
