"""Alerts as FITS: one alert per file that astropy, ds9 and TOPCAT open, read back losslessly.

The layout (docs/fits.md has it HDU by HDU):

- PRIMARY: no data; the alert's top-level scalars as header cards, for people to read;
- one image HDU per cutout (SCIENCE, TEMPLATE, DIFFERENCE...), decompressed, with the stamp's own
  header; every HDU of a multi-HDU stamp follows its first one, grouped by the CUTOUT keyword;
- ALERT: a one-row table of the top-level fields that are not records or arrays;
- one table per record field (one row, or none when the record is null) and per array field
  (one row per item): CANDIDATE, PRV_CANDIDATES, FP_HISTS, CUTOUTSCIENCE, DIASOURCE...;
- AVRO_SCHEMA: the alert's Avro schema.

The tables, not the header or the images, are what kcp reads back: every value sits in a column
of its own FITS type, bytes (the cutouts as they were sent) verbatim, and what has no natural FITS
column (a nested record, a union of several types, a string FITS cannot hold exactly) as its Avro
binary encoding. Nulls: TNULL for integers, NaN for floats, the empty string or empty bytes,
unless that blank value is also a real value of the column; then a boolean companion column
``FIELD.null`` says which rows are null. Decoding the tables with the stored schema gives the
datum whose Avro encoding is byte-identical to the original's.

astropy is imported only here, and lazily: ``kcp --help`` never loads it.
"""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fastavro

from ..codec import JsonToAvro, Schema, write_body
from ..codec.framing import read_body
from ..codec.limits import Limits
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options
from .lines import read_whole

LAYOUT_VERSION = 1
# A cutout decompressing past this is not a cutout but a gzip bomb.
STAMP_LIMIT = 64 << 20
FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"
JPEG_MAGIC = b"\xff\xd8\xff"
NATURAL_KINDS = ("boolean", "int", "long", "float", "double", "string", "bytes")
TFORMS = {"boolean": "L", "int": "J", "long": "K", "float": "E", "double": "D"}
NUMPY_TYPES = {"int": ">i4", "long": ">i8", "float": ">f4", "double": ">f8"}
# Header keywords a top-level field must not take over (it becomes a HIERARCH card instead).
_RESERVED_KEYWORDS = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "EXTNAME", "END", "COMMENT",
                      "HISTORY", "ORIGIN", "KCPFITS", "KCPPART", "AVRONAME", "AVROFP"}
_PLAIN_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
# Strings FITS holds exactly in a character column: printable ASCII, no trailing blank.
_PLAIN_STRING = re.compile(r"[\x20-\x7e]*[\x21-\x7e]|")
_ROW = ""  # the companion ".null" of the row itself: items of an array of nullable records


def _astropy_fits() -> Any:
    try:
        from astropy.io import fits
    except ImportError:
        raise UsageError("the FITS format needs astropy: pip install 'kcp[fits]'") from None
    return fits


# -- how a schema maps onto HDUs -----------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One Avro field of a table's rows: its natural FITS kind, or "avro" (its Avro binary)."""

    name: str
    kind: str
    nullable: bool
    doc: str
    avro: Any  # a parsed one-field record {"value": the field's type}: its Avro binary encoding


@dataclass(frozen=True)
class Table:
    """A top-level record or array field held as a table."""

    field: str
    doc: str
    is_array: bool
    columns: tuple[Column, ...]
    bare_items: bool  # an array of non-records: one column, named after the field
    nullable_items: bool  # an array of nullable records: a ".null" column flags the null rows


class Layout:
    """The HDUs of alerts of one schema; built once per schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        # Logical types (timestamps, decimals...) are written as the values they are encoded
        # from, which FITS holds exactly; reading decodes those with the real schema.
        plain = _without_logical_types(schema.definition)
        self.primitive = schema if plain == schema.definition else Schema(plain)
        parsed = self.primitive.parsed
        self.named = parsed.get("__named_schemas", {})
        self.top_columns: list[Column] = []
        self.tables: list[Table] = []
        for field in parsed["fields"]:
            table = self._table(field)
            if table is not None:
                self.tables.append(table)
            else:
                self.top_columns.append(self._column(field["name"], field["type"],
                                                     field.get("doc", "")))
        self.cutouts = [c.name for c in self.top_columns if _is_cutout(c.name)] + [
            t.field for t in self.tables if _is_cutout(t.field) and not t.is_array
            and any(c.name == "stampData" for c in t.columns)]

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.named.get(node, node)
        if isinstance(node, dict) and node.get("type") in NATURAL_KINDS:
            return node["type"]
        return node

    def _unwrap(self, node: Any) -> tuple[bool, Any]:
        """(nullable, the type) of a type or a union of null and one type; (False, None) for
        any other union."""
        if isinstance(node, list):
            branches = [b for b in node if b != "null"]
            if len(branches) != 1:
                return False, None
            return len(node) > 1, self._resolve(branches[0])
        return False, self._resolve(node)

    def _column(self, name: str, node: Any, doc: str) -> Column:
        nullable, inner = self._unwrap(node)
        kind = inner if isinstance(inner, str) and inner in NATURAL_KINDS else "avro"
        if isinstance(inner, dict) and inner.get("type") == "enum":
            kind = "string"
        # Any column may need it: strings FITS cannot hold exactly fall back to it too.
        avro = {"type": "record", "name": "kcp.fits.value", "fields": [
            {"name": "value", "type": node}], "__fastavro_parsed": True,
            "__named_schemas": self.named}
        return Column(name, kind, nullable, doc, avro)

    def _table(self, field: dict) -> Table | None:
        _, inner = self._unwrap(field["type"])  # a null one has AVRONULL = T
        doc = field.get("doc", "")
        if isinstance(inner, dict) and inner.get("type") == "record":
            return Table(field["name"], doc, False, self._row_columns(inner), False, False)
        if not (isinstance(inner, dict) and inner.get("type") == "array"):
            return None
        items_nullable, items = self._unwrap(inner["items"])
        if isinstance(items, dict) and items.get("type") == "record":
            return Table(field["name"], doc, True, self._row_columns(items), False,
                         items_nullable)
        column = self._column(field["name"], inner["items"], doc)
        return Table(field["name"], doc, True, (column,), True, False)

    def _row_columns(self, record: dict) -> tuple[Column, ...]:
        return tuple(self._column(f["name"], f["type"], f.get("doc", "")) for f in
                     record["fields"])

    def primitive_datum(self, datum: Any) -> Any:
        if self.primitive is self.schema:
            return datum
        return read_body(write_body(datum, self.schema), self.primitive, None, Limits())


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_logical_types(n) for n in node]
    if not isinstance(node, dict):
        return node
    plain = {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if "logicalType" in node and node.get("type") in NATURAL_KINDS:
        plain.pop("precision", None)
        plain.pop("scale", None)
    return plain


def _is_cutout(name: str) -> bool:
    return name.lower().startswith("cutout")


def _cutout_extname(name: str) -> str:
    return (name[len("cutout"):] or name).upper()


# -- Avro -> FITS ------------------------------------------------------------------------------
# Tables are encoded here rather than by astropy, which spends about 0.3 ms on each column; a
# ZTF alert has some 300. Images and headers with free-form cards go through astropy.
@dataclass
class _FitsColumn:
    """One column about to be written: fixed-width cells (a numpy array) or byte strings."""

    name: str
    tform: str  # L, J, K, E, D, nA, or PB (variable-length bytes, in the heap)
    cells: Any
    tnull: int | None = None
    comment: str = ""


def _plain(value: str) -> bool:
    return _PLAIN_STRING.fullmatch(value) is not None


def _blank(kind: str) -> Any:
    return {"float": math.nan, "double": math.nan, "string": "", "bytes": b""}.get(kind)


def _is_blank(kind: str, value: Any) -> bool:
    if kind in ("float", "double"):
        return math.isnan(value)
    return value == _blank(kind)


_ABSENT = object()  # a cell of a null row (an array of nullable records): any blank will do


def _fits_columns(column: Column, values: list[Any]) -> list[_FitsColumn]:
    """The FITS column(s) holding ``values`` of one field: itself, maybe its ".null" flags."""
    import numpy as np

    kind = column.kind
    real = [v for v in values if v is not None and v is not _ABSENT]
    if kind == "string" and not all(_plain(v) for v in real):
        kind = "avro"
    if kind == "avro":
        cells = [_encode_value(column, v) if v is not _ABSENT else b"" for v in values]
        return [_FitsColumn(f"{column.name}.avro", "PB", cells, comment=column.doc)]
    nulls = [v is None for v in values]
    if kind == "boolean":
        companion = column.nullable and any(nulls)
    else:  # the blank value of the column cannot say null when it is also a real value
        companion = column.nullable and kind not in ("int", "long") and any(
            _is_blank(kind, v) for v in real)
    tnull = None
    if kind in ("int", "long") and any(nulls):
        used = set(real)
        tnull = -(1 << (31 if kind == "int" else 63))
        while tnull in used:
            tnull += 1
    if kind in ("int", "long"):
        blank = tnull if tnull is not None else 0
    else:
        blank = False if kind == "boolean" else _blank(kind)
    cells = [blank if v is None or v is _ABSENT else v for v in values]
    if kind == "bytes":
        tform = "PB"
    elif kind == "string":
        width = max([len(v) for v in cells] + [1])
        tform, cells = f"{width}A", np.array(cells, dtype=f"S{width}")
    elif kind == "boolean":
        tform, cells = "L", np.array([b"T" if v else b"F" for v in cells], dtype="S1")
    else:
        tform, cells = TFORMS[kind], np.array(cells, dtype=NUMPY_TYPES[kind])
    columns = [_FitsColumn(column.name, tform, cells, tnull, column.doc)]
    if companion:
        flags = np.array([b"T" if null else b"F" for null in nulls], dtype="S1")
        columns.append(_FitsColumn(f"{column.name}.null", "L", flags,
                                   comment=f"T where {column.name} is null"))
    return columns


def _encode_value(column: Column, value: Any) -> bytes:
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, column.avro, {"value": value})
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise BadInput(f"field {column.name} does not match its schema: {exc}") from None
    return out.getvalue()


def _table_columns(columns: tuple[Column, ...] | list[Column], rows: list[Any], bare: bool,
                   nullable_rows: bool) -> list[_FitsColumn]:
    import numpy as np

    fits_columns = []
    for column in columns:
        if bare:
            values = rows
        else:
            values = [row[column.name] if row is not None else _ABSENT for row in rows]
        fits_columns += _fits_columns(column, values)
    if nullable_rows:
        flags = np.array([b"T" if row is None else b"F" for row in rows], dtype="S1")
        fits_columns.append(_FitsColumn(f"{_ROW}.null", "L", flags, comment="T where the row "
                                        "(an item of the array) is null"))
    return fits_columns


def _bintable(extname: str, columns: list[_FitsColumn], nrows: int,
              keywords: list[tuple[str, Any, str]], comment: str = "") -> bytes:
    """A BINTABLE extension: header, rows, and the heap of the variable-length columns."""
    import numpy as np

    rows = np.zeros(nrows, dtype=[(f"c{number}", ">i4", (2,)) if column.tform == "PB" else
                                  (f"c{number}", column.cells.dtype)
                                  for number, column in enumerate(columns)])
    heap = bytearray()
    column_cards: list[tuple[str, Any, str]] = []
    for number, column in enumerate(columns, 1):
        tform = column.tform
        if tform == "PB":  # (length, offset in the heap) descriptors
            descriptors = rows[f"c{number - 1}"]
            for row, cell in enumerate(column.cells):
                descriptors[row] = (len(cell), len(heap))
                heap += cell
            tform = f"PB({max(map(len, column.cells), default=0)})"
        else:
            rows[f"c{number - 1}"] = column.cells
        column_cards += [(f"TTYPE{number}", column.name, ""), (f"TFORM{number}", tform, "")]
        if column.tnull is not None:
            column_cards.append((f"TNULL{number}", column.tnull, "null"))
        if column.comment:
            column_cards.append((f"TCOMM{number}", _one_card(column.comment), ""))
    cards = [("XTENSION", "BINTABLE", "binary table extension"), ("BITPIX", 8, ""),
             ("NAXIS", 2, ""), ("NAXIS1", rows.dtype.itemsize, "bytes per row"),
             ("NAXIS2", nrows, "rows"), ("PCOUNT", len(heap), "heap bytes"), ("GCOUNT", 1, ""),
             ("TFIELDS", len(columns), "columns"), *column_cards, ("EXTNAME", extname, ""),
             *keywords]
    header = b"".join(_card(*card) for card in cards)
    if comment:
        header += f"COMMENT {_one_card(comment)}".ljust(80).encode()
    return _padded(header + b"END".ljust(80), b" ") + _padded(rows.tobytes() + heap, b"\0")


def _card(keyword: str, value: Any, comment: str) -> bytes:
    """One fixed-format header card (or, for a string too long for one, CONTINUE cards)."""
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20}"
    else:
        if not _plain(value.rstrip()):
            raise BadInput(f"{value!r} cannot be written in a FITS header (printable ASCII only)")
        quoted = "'{:<8}'".format(value.replace("'", "''"))
        if len(quoted) > 70:
            return _astropy_fits().Card(keyword, value, comment).image.encode()
        text = f"{quoted:<20}"
    card = f"{keyword:<8}= {text}"
    if comment:
        card = f"{card} / {comment}"
    return card[:80].ljust(80).encode()


def _padded(data: bytes | bytearray, fill: bytes) -> bytes:
    return bytes(data) + fill * (-len(data) % 2880)


def _one_card(text: str) -> str:
    """Text as one header card holds it: printable ASCII, cut when longer."""
    text = "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))
    return text if len(text) <= 68 else text[:65] + "..."


def alert_to_fits(datum: Any, layout: Layout) -> bytes:
    """One alert as the bytes of a FITS file."""
    record = layout.primitive_datum(datum)
    if not isinstance(record, dict):
        raise BadInput(f"a FITS alert is an Avro record, not {type(record).__name__}")
    with warnings.catch_warnings():  # ZTF stamps' SIMPLE card alone would warn every time
        warnings.simplefilter("ignore")
        header = _primary_header(layout, record)
        views = [_cutout_views(field, record[field], header) for field in layout.cutouts]
        parts = [_padded(header.tostring().encode(), b" "), *views]
        parts.append(_bintable("ALERT", _table_columns(layout.top_columns, [record], False,
                                                       False),
                               1, [("KCPPART", "ALERT", "the top-level fields of the alert")]))
        for table in layout.tables:
            value = record[table.field]
            rows = [] if value is None else value if table.is_array else [value]
            columns = _table_columns(table.columns, rows, table.bare_items, table.nullable_items)
            parts.append(_bintable(table.field.upper(), columns, len(rows), [
                ("KCPPART", "FIELD", "an alert field held as a table"),
                ("AVROFLD", table.field, "its Avro field name"),
                ("AVRONULL", value is None, "T: the field is null")], table.doc))
        parts.append(_schema_table(layout.schema))
    return b"".join(parts)


def _primary_header(layout: Layout, record: dict) -> Any:
    """No data; the top-level scalars as cards for people (the ALERT table is read back)."""
    fits = _astropy_fits()
    header = fits.Header([("SIMPLE", True, "conforms to FITS standard"),
                          ("BITPIX", 8, ""), ("NAXIS", 0, ""), ("EXTEND", True, ""),
                          ("ORIGIN", "kcp", ""),
                          ("KCPFITS", LAYOUT_VERSION, "an Avro alert in FITS (kcp docs/fits.md)"),
                          ("AVRONAME", layout.schema.name, "its Avro schema: HDU AVRO_SCHEMA"),
                          ("AVROFP", f"{layout.schema.fingerprint:016x}",
                           "the schema's CRC-64-AVRO fingerprint")])
    for column in layout.top_columns:
        value = record[column.name]
        if column.kind in ("bytes", "avro"):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif isinstance(value, str):
            value = _one_card(value)
        keyword = column.name.upper()
        if not _PLAIN_KEYWORD.fullmatch(keyword) or keyword in _RESERVED_KEYWORDS:
            keyword = f"HIERARCH {column.name}"
        header[keyword] = (value, _one_card(column.doc))
    return header


def _cutout_views(field: str, value: Any, header: Any) -> bytes:
    """The HDUs showing one cutout, or none (with a note) when it is not a FITS image."""
    stamp = value.get("stampData") if isinstance(value, dict) else value
    if not isinstance(stamp, bytes) or not stamp:
        return b""
    views = _stamp_views(field, stamp, _cutout_extname(field))
    if isinstance(views, str):
        header["COMMENT"] = f"{field}: {views}; kept as bytes, no image HDU"
        return b""
    return views


def _stamp_views(field: str, stamp: bytes, base: str) -> bytes | str:
    """The HDUs of a stamp (gzip-compressed or not) as extensions, or why there are none.

    Each HDU is copied as it is, data untouched; its header gains EXTNAME (BASE for the first,
    BASE_NAME for the others), CUTOUT (the field) and CUTHDU (its number in the stamp), and the
    stamp's primary header becomes an IMAGE extension header.
    """
    fits = _astropy_fits()
    if stamp[:2] == GZIP_MAGIC:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            stamp = inflater.decompress(stamp, STAMP_LIMIT + 1)
        except zlib.error as exc:
            return f"corrupt gzip data ({exc})"
        if len(stamp) > STAMP_LIMIT:
            raise BadInput(f"{field} decompresses past {STAMP_LIMIT >> 20} MB "
                           "(a gzip bomb?); not converted")
        if not inflater.eof:
            return "truncated gzip data"
    if stamp[:3] == JPEG_MAGIC:
        return "a JPEG image, not FITS"
    if not stamp.startswith(FITS_MAGIC):
        return "not a FITS image"
    views = []
    try:
        hdus = fits.open(io.BytesIO(stamp), memmap=False)
        for number in range(len(hdus)):
            where = hdus.fileinfo(number)
            end = where["datLoc"] + hdus[number].size  # some writers leave the last block short
            if end > len(stamp):
                return "a FITS image declaring more data than it holds"
            own = fits.Header.fromstring(stamp[where["hdrLoc"]:where["datLoc"]].decode("ascii"))
            if number == 0:
                if own.get("GROUPS"):
                    return "random-groups FITS, not an image"
                own = _as_extension(own)
            own["EXTNAME"] = base if number == 0 else f"{base}_{own.get('EXTNAME', number)}"
            own["CUTOUT"] = (field, "the alert field this stamp came from")
            own["CUTHDU"] = (number, "HDU number within that stamp")
            views.append(_padded(own.tostring().encode(), b" "))
            views.append(_padded(stamp[where["datLoc"]:end], b"\0"))
    except Exception as exc:  # astropy reports damaged FITS with many exception types
        return f"an unreadable FITS image ({type(exc).__name__})"
    return b"".join(views)


def _as_extension(primary: Any) -> Any:
    """A primary HDU's header made the header of an IMAGE extension."""
    fits = _astropy_fits()
    naxis = primary.get("NAXIS", 0)
    structure = ["BITPIX", "NAXIS", *(f"NAXIS{n}" for n in range(1, naxis + 1))]
    header = fits.Header([("XTENSION", "IMAGE", "image extension")])
    for keyword in structure:
        header[keyword] = primary[keyword]
    header["PCOUNT"] = 0
    header["GCOUNT"] = 1
    for card in primary.cards:
        if card.keyword not in ("SIMPLE", "EXTEND", "PCOUNT", "GCOUNT", *structure):
            header.append(card)
    return header


def _schema_table(schema: Schema) -> bytes:
    import numpy as np

    text = schema.text.encode("ascii")
    column = _FitsColumn("schema", f"{len(text)}A", np.array([text], dtype=f"S{len(text)}"),
                         comment="the Avro schema of the alert, as JSON")
    return _bintable("AVRO_SCHEMA", [column], 1, [
        ("KCPPART", "SCHEMA", "the Avro schema of the alert"),
        ("AVRONAME", schema.name, ""), ("AVROFP", f"{schema.fingerprint:016x}", "")])


# -- FITS -> Avro ------------------------------------------------------------------------------
# Read without astropy: only the headers' simple cards and the tables' columns are needed, and
# numpy decodes a table in one call where astropy would build an object per column.
_CARD_VALUE = re.compile(r"\s*(?:'((?:[^']|'')*)'|(\S+?))\s*(?:/.*)?$")
_TFORM = re.compile(r"(\d*)([LBIJKEDA]|[PQ]B)(?:\(\d*\))?")
_TFORM_TYPES = {"L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8",
                "PB": (">i4", (2,)), "QB": (">i8", (2,))}


class _Hdu:
    """An HDU of a FITS file: its header's keyword values, and where its data lie."""

    def __init__(self, data: bytes, start: int) -> None:
        self.cards: dict[str, Any] = {}
        position, last = start, ""
        while True:
            card = data[position:position + 80].decode("ascii", "replace")
            if len(card) < 80:
                raise BadInput("truncated FITS header (no END card)")
            position += 80
            keyword = card[:8].rstrip()
            if keyword == "END":
                break
            if card[8:10] == "= ":
                self.cards[keyword] = _card_value(card[10:])
                last = keyword
            elif keyword == "CONTINUE":  # the long-string convention: 'text&' then CONTINUE 'more'
                more, before = _card_value(card[8:]), self.cards.get(last)
                if isinstance(more, str) and isinstance(before, str) and before.endswith("&"):
                    self.cards[last] = before[:-1] + more
        self.data_start = position + (-(position - start) % 2880)
        bitpix = self.cards.get("BITPIX")
        if bitpix not in (8, 16, 32, 64, -32, -64):
            raise BadInput("malformed FITS header (BITPIX)")
        axes = [self._count(f"NAXIS{n}") for n in range(1, self.axis_count("NAXIS") + 1)]
        size = abs(bitpix) // 8 * self._count("GCOUNT", 1) * (
            self._count("PCOUNT") + (math.prod(axes) if axes else 0))
        self.data_end = self.data_start + size
        if self.data_end > len(data):
            raise BadInput("truncated FITS file (an HDU's data run past the end)")
        self.next = self.data_end + (-size % 2880)

    def _count(self, keyword: str, default: int = 0) -> int:
        value = self.cards.get(keyword, default)
        if type(value) is not int or value < 0:
            raise BadInput(f"malformed FITS header ({keyword})")
        return value

    def axis_count(self, keyword: str) -> int:
        """NAXIS or TFIELDS: the FITS standard allows at most 999 (each names a keyword)."""
        value = self._count(keyword)
        if value > 999:
            raise BadInput(f"malformed FITS header ({keyword} = {value}, more than 999)")
        return value


def _card_value(text: str) -> Any:
    match = _CARD_VALUE.match(text)
    if match is None:
        return None
    if match.group(1) is not None:
        return match.group(1).replace("''", "'").rstrip(" ")
    token = match.group(2)
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E"))
    except ValueError:
        return None


class _Table:
    """The columns of a BINTABLE HDU, decoded into Python values."""

    def __init__(self, data: bytes, hdu: _Hdu) -> None:
        try:
            import numpy as np
        except ImportError:  # astropy brings it; reading needs only numpy
            raise UsageError("the FITS format needs numpy: pip install 'kcp[fits]'") from None

        cards = hdu.cards
        self.name = cards.get("EXTNAME", "?")
        self.count = cards.get("NAXIS2", 0)
        self.names = [cards.get(f"TTYPE{n}", "") for n in range(1, hdu.axis_count("TFIELDS") + 1)]
        self.tnull = [cards.get(f"TNULL{n}") for n in range(1, len(self.names) + 1)]
        self.forms = []
        layout = []
        for number in range(len(self.names)):
            match = _TFORM.fullmatch(str(cards.get(f"TFORM{number + 1}", "")).strip())
            if match is None:
                raise BadInput(f"table {self.name}: column {self.names[number]!r} has a format "
                               "kcp does not read")
            repeat, code = int(match.group(1) or 1), match.group(2)
            if code == "A":
                layout.append((f"c{number}", f"S{repeat}"))
            elif repeat != 1:
                raise BadInput(f"table {self.name}: column {self.names[number]!r} holds arrays")
            else:
                layout.append((f"c{number}", *((_TFORM_TYPES[code],)
                                               if isinstance(_TFORM_TYPES[code], str)
                                               else _TFORM_TYPES[code])))
            self.forms.append(code)
        dtype = np.dtype(layout)
        if dtype.itemsize != cards.get("NAXIS1"):
            raise BadInput(f"table {self.name}: rows of {cards.get('NAXIS1')} bytes do not hold "
                           "its columns")
        # A table without columns (an alert whose fields are all records) has rows of no bytes.
        self.rows = np.frombuffer(data, dtype, self.count, hdu.data_start) if layout else None
        heap_start = hdu.data_start + cards.get("THEAP", dtype.itemsize * self.count)
        self.heap = memoryview(data)[heap_start:hdu.data_end]

    def column(self, number: int) -> list[Any]:
        cells = self.rows[f"c{number}"]
        code = self.forms[number]
        if code == "L":
            return (cells == b"T").tolist()
        if code == "A":
            try:
                return [cell.decode("ascii").rstrip(" ") for cell in cells.tolist()]
            except UnicodeDecodeError:
                raise BadInput(f"table {self.name}: non-ASCII text in a column") from None
        if code in ("PB", "QB"):
            out = []
            for length, offset in cells.tolist():
                if offset < 0 or length < 0 or offset + length > len(self.heap):
                    raise BadInput(f"table {self.name}: a variable-length cell lies outside "
                                   "the heap")
                out.append(bytes(self.heap[offset:offset + length]))
            return out
        return cells.tolist()


def fits_to_alert(data: bytes, options: Options, layouts: dict[Schema, Layout]
                  ) -> tuple[Any, Schema]:
    """The alert a FITS file written by :func:`alert_to_fits` holds, and its schema."""
    if not data.startswith(FITS_MAGIC):
        raise BadInput("not a FITS file (it does not start with SIMPLE =)")
    try:
        record, schema, layout = _record(data, options, layouts)
    except UsageError as exc:  # the stored schema is not a valid Avro schema
        raise BadInput(f"AVRO_SCHEMA: {exc.message}") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # A damaged file can break the tables' layout in many ways (numpy reports them).
        raise BadInput(f"corrupt FITS alert ({type(exc).__name__}: {exc})") from None
    body = write_body(record, layout.primitive)
    return (read_body(body, schema, options.schemas.reader, options.limits),
            options.schemas.reader or schema)


def _record(data: bytes, options: Options, layouts: dict[Schema, Layout]
            ) -> tuple[dict, Schema, Layout]:
    """The alert's record (logical types still undecoded), its schema and their layout."""
    parts: dict[Any, _Hdu] = {}
    position = 0
    while position < len(data) and data[position:position + 1] != b"\0":
        hdu = _Hdu(data, position)
        part = hdu.cards.get("KCPPART")
        if part in ("ALERT", "SCHEMA"):
            parts[part] = hdu
        elif part == "FIELD":
            parts[("FIELD", hdu.cards.get("AVROFLD"))] = hdu
        position = hdu.next
    if "SCHEMA" not in parts or "ALERT" not in parts:
        raise BadInput("a FITS file without kcp's ALERT and AVRO_SCHEMA tables: kcp reads back "
                       "the alerts it wrote (docs/fits.md)")
    (text,) = _Table(data, parts["SCHEMA"]).column(0)
    schema = options.schemas.from_header_text(text.encode())
    layout = layouts.get(schema)
    if layout is None:
        layout = layouts[schema] = Layout(schema)
    (record,) = _rows(_Table(data, parts["ALERT"]), layout.top_columns, False, False)
    for table in layout.tables:
        hdu = parts.get(("FIELD", table.field))
        if hdu is None:
            raise BadInput(f"no table for the field {table.field}")
        if hdu.cards.get("AVRONULL"):
            record[table.field] = None
            continue
        rows = _rows(_Table(data, hdu), table.columns, table.bare_items, table.nullable_items)
        if table.is_array:
            record[table.field] = rows
        elif len(rows) == 1:
            record[table.field] = rows[0]
        else:
            raise BadInput(f"table {table.field.upper()} holds {len(rows)} rows, not one")
    return record, schema, layout


def _rows(table: _Table, columns: tuple[Column, ...] | list[Column], bare: bool,
          nullable_rows: bool) -> list[Any]:
    """The rows of a table as Avro values (records, or bare values for ``bare``)."""
    index = {name: number for number, name in enumerate(table.names)}
    null_rows = table.column(index[f"{_ROW}.null"]) if nullable_rows else [False] * table.count
    values: dict[str, list[Any]] = {}
    for column in columns:
        if column.name in index:
            number = index[column.name]
            cells = table.column(number)
            if f"{column.name}.null" in index:
                flags = table.column(index[f"{column.name}.null"])
                cells = [None if flag else cell for cell, flag in zip(cells, flags, strict=True)]
            elif column.nullable:
                tnull = table.tnull[number]
                cells = [None if _is_null(column.kind, cell, tnull) else cell for cell in cells]
            values[column.name] = cells
        elif f"{column.name}.avro" in index:
            cells = table.column(index[f"{column.name}.avro"])
            values[column.name] = [None if null else _decode_value(column, cell)
                                   for cell, null in zip(cells, null_rows, strict=True)]
        else:
            raise BadInput(f"table {table.name} has no column for the field {column.name}")
    if bare:
        return values[columns[0].name]
    rows: list[Any] = [dict(zip(values, cells, strict=True))
                       for cells in zip(*values.values(), strict=True)] if values else [
                           {} for _ in range(table.count)]
    return [None if null else row for row, null in zip(rows, null_rows, strict=True)]


def _is_null(kind: str, cell: Any, tnull: Any) -> bool:
    if kind in ("int", "long"):
        return tnull is not None and cell == tnull
    if kind == "boolean":
        return False
    return _is_blank(kind, cell)


def _decode_value(column: Column, data: bytes) -> Any:
    try:
        return fastavro.schemaless_reader(io.BytesIO(data), column.avro, None)["value"]
    except Exception as exc:  # fastavro reports corrupt data with many exception types
        raise BadInput(f"column {column.name}.avro: corrupt Avro value ({exc})") from None


# -- the Reader and Writer of FORMATS ------------------------------------------------------------
class FitsReader:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.layouts: dict[Schema, Layout] = {}

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a FITS alert was expected")
        message.datum, message.schema = fits_to_alert(message.value, self.options, self.layouts)
        message.decoded = True
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        return read_whole(self.decode, stream, source, self.options.limits.max_line_bytes)


class FitsWriter:
    def __init__(self, options: Options) -> None:
        self.schemas = options.schemas
        self.layouts: dict[Schema, Layout] = {}
        self.to_avro = JsonToAvro(options.bytes_mode, options.json_style)

    def encode(self, message: Message) -> bytes:
        schema = self.schemas.reader or message.schema or self.schemas.default
        if schema is None:
            raise UsageError("writing FITS needs the Avro schema of records read as plain JSON: "
                             "give --schema FILE")
        datum = message.datum
        if message.schema is None:
            datum = self.to_avro.datum(datum, schema)
        layout = self.layouts.get(schema)
        if layout is None:
            layout = self.layouts[schema] = Layout(schema)
        return alert_to_fits(datum, layout)

    def recover(self, stream: BinaryIO) -> None:
        raise UsageError("a .fits file holds one alert and cannot be continued; write a .tar "
                         "with --member-format fits to resume a copy")

    def open_stream(self, stream: BinaryIO) -> FitsStreamWriter:
        return FitsStreamWriter(stream, self)


class FitsStreamWriter:
    """A .fits file: exactly one alert."""

    # Whether an alert was written already is known only where the file is written, so records
    # are written by one process (-j consumer processes would each write "the" alert).
    encodes_alone = False

    def __init__(self, stream: BinaryIO, owner: FitsWriter) -> None:
        self.stream = stream
        self.owner = owner
        self.written = False

    def write(self, message: Message) -> None:
        self.write_encoded(self.owner.encode(message))

    def write_encoded(self, data: bytes) -> None:
        if self.written:
            raise UsageError("a .fits file holds one alert: write many to a tar "
                             "(night.tar.gz --member-format fits), or stop after one (-c 1)")
        self.stream.write(data)
        self.written = True

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
