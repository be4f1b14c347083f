"""The one mapping between Avro data and JSON, and its exact inverse.

Rules of the default ``kcp`` style (what ``jq`` users see):

- records and maps are objects, arrays are arrays, enums are their symbol;
- a union value is written bare (no branch wrapper); on the way back the branch is the first one,
  in schema order, that the JSON value fits.  So the round trip is exact when a union's branches
  differ in JSON type (``["null", X]``, as in every ZTF and Rubin schema); a union of two branches
  that JSON writes alike (string and bytes, string and a logical type, record and map, two
  records) needs the ``avro`` style;
- ``bytes`` and ``fixed`` are base64 strings (``--bytes hex`` for hex; ``data-uri`` for
  ``data:application/octet-stream;base64,...`` as the 2018 kcp prototype wrote them; ``size``
  writes the length, ``summary`` a string for people such as ``"<13,958 bytes gzip FITS>"`` (the
  default on a terminal), ``omit`` writes null and ``file:DIR`` the name of a file holding them,
  all four one-way).  Reading, a ``data:`` URI is accepted whatever ``--bytes`` says: neither
  base64 nor hex can start with ``data:``;
- float and double NaN, +Infinity and -Infinity, which JSON cannot hold, are the strings
  ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, turned back into floats where the schema says
  float; a NaN with its sign bit set (what C and numpy computations produce) is ``"-NaN"``, so
  the sign survives the round trip (a NaN's other payload bits do not);
- logical types are readable: timestamps as ISO-8601 (``2018-07-25T04:32:11.123000+00:00``), dates
  ``YYYY-MM-DD``, times ``HH:MM:SS.ffffff``, decimals as strings, uuids as strings; each converts
  back exactly.

The ``avro`` style is the Avro specification's JSON encoding (unions wrapped as ``{"type": v}``,
bytes as ISO-8859-1 strings), for tools that speak it.  Like Java's Avro it writes non-finite
floats as bare ``NaN``/``Infinity`` tokens (not strict JSON), and a NaN comes back without its sign.
"""

from __future__ import annotations

import binascii
import copy
import datetime as dt
import decimal
import functools
import io
import json
import math
import operator
import struct
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import fastavro
import orjson
import pybase64
from fastavro.validation import ValidationError, validate

from ..errors import BadInput, UsageError
from .schemas import Schema, named_types

BYTES_MODES = ("base64", "hex", "data-uri", "size", "summary", "omit")
DATA_URI_PREFIX = "data:application/octet-stream;base64,"
# --bytes file:DIR: each bytes value to a file of DIR, its name in the JSON (formats/cutout_files)
FILES_MODE = "file:"
JSON_STYLES = ("kcp", "avro")
FLOAT_TOKENS = {"NaN": math.nan, "-NaN": -math.nan, "Infinity": math.inf,
                "-Infinity": -math.inf}
_INF = math.inf
_NINF = -math.inf

Converter = Callable[[Any], Any]


def _float_token(value: float) -> str:
    if value != value:
        return "-NaN" if math.copysign(1.0, value) < 0 else "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def check_bytes_mode(mode: str) -> None:
    if mode not in BYTES_MODES and not mode.startswith(FILES_MODE):
        raise UsageError(f"--bytes must be one of {', '.join(BYTES_MODES)} or {FILES_MODE}DIR")


def inline_bytes_mode(mode: str | None) -> str:
    """The bytes mode of JSON that carries the bytes themselves: with ``--bytes file:DIR`` the
    files are written by the JSON Lines writer, so everything else keeps base64."""
    return "base64" if not mode or mode.startswith(FILES_MODE) else mode


def bytes_summary(data: bytes) -> str:
    """Bytes as a person reads them in JSON: their size and, when their magic says so, what
    they hold (a ZTF cutout is gzipped FITS), e.g. ``<13,958 bytes gzip FITS>``."""
    kind = ""
    head = data[:9]
    if data[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:4096], 9)
        except zlib.error:
            head = b""
        kind = " gzip"
    if head == b"SIMPLE  =":
        kind += " FITS"
    return f"<{len(data):,} bytes{kind}>"


def _bytes_default(mode: str) -> Callable[[Any], Any]:
    encode = {
        # pybase64 (SIMD) encodes a 60 kB alert's cutouts ~40x faster than the stdlib.
        "base64": pybase64.b64encode_as_string,
        "hex": lambda b: b.hex(),
        "data-uri": lambda b: DATA_URI_PREFIX + pybase64.b64encode_as_string(b),
        "size": len,
        "summary": bytes_summary,
        "omit": lambda b: None,
    }[mode]

    def default(obj: Any) -> Any:
        if isinstance(obj, bytes):
            return encode(obj)
        if isinstance(obj, (bytearray, memoryview)):
            return encode(bytes(obj))
        if isinstance(obj, decimal.Decimal):
            return str(obj)
        if isinstance(obj, (dt.datetime, dt.date, dt.time)):
            return obj.isoformat()
        raise TypeError(f"cannot write {type(obj).__name__} as JSON")

    return default


class _Compiler:
    """Builds per-schema converters once; ``None`` means "nothing to convert below here"."""

    def __init__(self, parsed: Any) -> None:
        self.named = named_types(parsed)
        self.cache: dict[int, Converter | None] = {}

    def resolve(self, node: Any) -> Any:
        if isinstance(node, str) and node in self.named:
            return self.named[node]
        return node


class _NanCompiler(_Compiler):
    """Avro -> JSON: only NaN/Infinity floats need rewriting, in place; orjson does the rest."""

    def build(self, node: Any, seen: frozenset = frozenset()) -> Converter | None:
        node = self.resolve(node)
        if isinstance(node, str):
            if node in ("float", "double"):
                return lambda v: v if (v == v and v != _INF and v != _NINF) else _float_token(v)
            return None
        if isinstance(node, list):
            # A branch's converter sees only values of its Python type: a string or a bool of
            # another branch must not be iterated as an array, nor a map read as an array.
            branches = [(self._python_type(b), c) for b in node
                        for c in [self.build(b, seen)] if c is not None]
            if not branches:
                return None
            return lambda v: _first_that_applies(branches, v)
        kind = node["type"]
        if kind in ("record", "error"):
            name = node["name"]
            if name in seen:  # a recursive type: convert lazily through the cache
                return lambda v: self.cache[id(self.named[name])](v)
            seen = seen | {name}
            floats = [f["name"] for f in node["fields"] if self._is_float(f["type"])]
            nested = [(f["name"], c) for f in node["fields"] if not self._is_float(f["type"])
                      for c in [self.build(f["type"], seen)] if c is not None]
            if not floats and not nested:
                self.cache[id(node)] = _identity
                return None

            read_floats = _getter(floats)

            def record(value: dict) -> dict:
                if floats and not _all_finite(read_floats(value)):
                    _tokenize(value, floats)
                for field, convert in nested:
                    v = value[field]
                    if v is not None:
                        value[field] = convert(v)
                return value

            if floats and not nested:  # arrays of such records are checked in one pass
                record.read_floats = read_floats  # type: ignore[attr-defined]
                record.floats = floats  # type: ignore[attr-defined]
            self.cache[id(node)] = record
            return record
        if kind == "array":
            item = self.build(node["items"], seen)
            if item is None:
                return None
            read_floats = getattr(item, "read_floats", None)
            if read_floats is not None:
                floats = item.floats  # type: ignore[attr-defined]

                def float_records(v: list) -> list:
                    if not _all_finite(chain.from_iterable(map(read_floats, v))):
                        for x in v:
                            _tokenize(x, floats)
                    return v

                return float_records
            return lambda v: [item(x) for x in v]
        if kind == "map":
            value_converter = self.build(node["values"], seen)
            if value_converter is None:
                return None
            return lambda v: {k: value_converter(x) for k, x in v.items()}
        if kind in ("float", "double"):
            return self.build(kind, seen)
        return None

    def _python_type(self, node: Any) -> type:
        """The Python type of the decoded values of a branch that has a converter."""
        node = self.resolve(node)
        kind = node["type"] if isinstance(node, dict) else node
        return {"record": dict, "error": dict, "map": dict, "array": list}.get(kind, float)

    def _is_float(self, node: Any) -> bool:
        """A plain or nullable float field, handled inline by the record converter."""
        if node in ("float", "double"):
            return True
        if isinstance(node, dict) and node.get("type") in ("float", "double") and len(node) <= 2:
            return True
        if isinstance(node, list) and len(node) == 2 and "null" in node:
            other = node[1] if node[0] == "null" else node[0]
            return other in ("float", "double")
        return False


_NOT_NONE = functools.partial(operator.is_not, None)


def _all_finite(values: Iterable[float | None]) -> bool:
    """No NaN or infinity among ``values`` (None skipped), checked in C: the sum of finite
    numbers minus itself is 0; NaN or inf anywhere makes it NaN.  A sum that overflows only
    sends the record down the exact path."""
    total = sum(filter(_NOT_NONE, values))
    return total - total == 0.0


def _getter(fields: list[str]) -> Callable[[dict], tuple]:
    if not fields:
        return lambda record: ()
    if len(fields) == 1:
        only = fields[0]
        return lambda record: (record[only],)
    return operator.itemgetter(*fields)


def _tokenize(record: dict, floats: list[str]) -> None:
    for field in floats:
        v = record[field]
        if v != v or v in (_INF, _NINF):
            record[field] = _float_token(v)


def _identity(value: Any) -> Any:
    return value


def _first_that_applies(converters: list[tuple[type, Converter]], value: Any) -> Any:
    if isinstance(value, float):
        return _float_token(value) if (value != value or value in (_INF, _NINF)) else value
    for python_type, convert in converters:
        if isinstance(value, python_type):
            try:
                return convert(value)
            except (TypeError, KeyError):  # a record branch this dict is not
                continue
    return value


class AvroToJson:
    """Encodes decoded datums as JSON bytes (one line, no newline) in one style."""

    def __init__(self, bytes_mode: str = "base64", style: str = "kcp",
                 beyond_schema: bool = False) -> None:
        """``beyond_schema``: datums may hold values their schema does not (what a ``--map``
        function added): their NaN and infinities too are written as the strings of the
        mapping (orjson would write them as null), at the cost of a walk over every value."""
        check_bytes_mode(bytes_mode)
        if bytes_mode.startswith(FILES_MODE):
            raise UsageError("--bytes file:DIR is for JSON Lines (--to json)")
        if style not in JSON_STYLES:
            raise UsageError(f"--json-style must be one of {', '.join(JSON_STYLES)}")
        self.style = style
        self.beyond_schema = beyond_schema
        self._default = _bytes_default(bytes_mode)
        # Keyed by the Schema itself, not id(): a freed schema's id can be reused by another one.
        self._converters: dict[Schema, Converter | None] = {}

    def _converter(self, schema: Schema) -> Converter | None:
        if schema not in self._converters:
            self._converters[schema] = _NanCompiler(schema.parsed).build(schema.parsed)
        return self._converters[schema]

    def __call__(self, datum: Any, schema: Schema | None, option: int = 0) -> bytes:
        """JSON for ``datum``.  The datum's NaN floats are rewritten in place (it is consumed)."""
        if self.style == "avro" and schema is not None:
            out = io.StringIO()
            try:
                fastavro.json_writer(out, schema.parsed, [datum])
            except Exception as exc:  # fastavro's JSON encoder raises bare Exceptions too
                raise BadInput(f"cannot write Avro-JSON of schema {schema.name}: {exc}") from None
            return out.getvalue().rstrip("\n").encode()
        try:
            if schema is not None and not self.beyond_schema:
                convert = self._converter(schema)
                if convert is not None:
                    datum = convert(datum)
            else:
                datum = _nan_tokens_anywhere(datum)
        except RecursionError:  # JSON input may nest up to orjson's 1024 levels
            raise BadInput("record nested too deeply to write as JSON") from None
        except KeyError as exc:  # a record of this schema without one of its fields
            raise BadInput(f"record lacks field {exc} of schema {schema and schema.name}"
                           ) from None
        # Dates and times go through isoformat(): orjson 3.13 writes time(0, 0, 0, 10000) as
        # "00:00:00.10000", a tenth of a second.
        try:
            return orjson.dumps(datum, default=self._default,
                                option=option | orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError as exc:
            raise BadInput(f"cannot write this record as JSON: {exc}") from None


def _nan_tokens_anywhere(value: Any) -> Any:
    """Schema-less data (plain JSON passing through): rewrite non-finite floats anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return _float_token(value)
    if isinstance(value, dict):
        return {k: _nan_tokens_anywhere(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_tokens_anywhere(v) for v in value]
    return value


class _InverseCompiler(_Compiler):
    """JSON -> Avro datum, guided by the schema; errors name the field path."""

    def __init__(self, parsed: Any, bytes_mode: str) -> None:
        super().__init__(parsed)
        self.bytes_mode = bytes_mode

    def build(self, node: Any) -> Callable[[Any, str], Any]:
        node = self.resolve(node)
        if isinstance(node, list):
            return self._union(node)
        if isinstance(node, str):
            return self._primitive(node)
        kind = node["type"]
        logical = node.get("logicalType")
        if logical is not None and logical in _LOGICAL_FROM_JSON:
            return _LOGICAL_FROM_JSON[logical]
        if kind in ("record", "error"):
            cached = self.cache.get(id(node))
            if cached is not None:
                return cached
            fields: list[tuple[str, Callable[[Any, str], Any]]] = []
            # A field left out takes its default, as Avro's schema resolution would give it.
            defaults = {f["name"]: f["default"] for f in node["fields"] if "default" in f}

            def record(value: Any, path: str) -> Any:
                if not isinstance(value, dict):
                    raise _mismatch(path, f"record {node['name']}", value)
                for name, convert in fields:
                    if name in value:
                        value[name] = convert(value[name], f"{path}.{name}" if path else name)
                    elif name in defaults:
                        value[name] = copy.deepcopy(defaults[name])
                return value

            self.cache[id(node)] = record  # before the fields, for recursive types
            fields.extend((f["name"], self.build(f["type"])) for f in node["fields"])
            return record
        if kind == "array":
            item = self.build(node["items"])

            def array(value: Any, path: str) -> Any:
                if not isinstance(value, list):
                    raise _mismatch(path, "array", value)
                return [item(x, f"{path}[{i}]") for i, x in enumerate(value)]

            return array
        if kind == "map":
            values = self.build(node["values"])

            def mapping(value: Any, path: str) -> Any:
                if not isinstance(value, dict):
                    raise _mismatch(path, "map", value)
                return {k: values(x, f"{path}.{k}") for k, x in value.items()}

            return mapping
        if kind == "enum":
            symbols = node["symbols"]

            def enum(value: Any, path: str) -> Any:
                if value not in symbols:
                    raise _mismatch(path, f"one of {symbols}", value)
                return value

            return enum
        if kind == "fixed":
            return self._primitive("bytes")
        return self._primitive(kind)

    def _primitive(self, kind: str) -> Callable[[Any, str], Any]:
        if kind == "bytes":
            return self._bytes
        if kind == "float":
            return _float32_from_json
        if kind == "double":
            return _float_from_json
        if kind == "int":
            return _INT_FROM_JSON
        if kind == "long":
            return _LONG_FROM_JSON
        return _checked(kind)

    def _bytes(self, value: Any, path: str) -> bytes:
        if not isinstance(value, str):
            raise _mismatch(path, f"{self.bytes_mode} bytes", value)
        try:
            if value.startswith("data:"):
                return _from_data_uri(value)
            if self.bytes_mode == "hex":
                return bytes.fromhex(value)
            if self.bytes_mode in ("base64", "data-uri"):
                return pybase64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            raise _mismatch(path, f"{self.bytes_mode} bytes", value) from None
        raise BadInput(f"{path}: bytes written with --bytes {self.bytes_mode} cannot be restored")

    def _union(self, branches: list) -> Callable[[Any, str], Any]:
        options = [(self._json_kinds(self.resolve(b)), self.build(b)) for b in branches]

        def union(value: Any, path: str) -> Any:
            if value is None and any("null" in kinds for kinds, _ in options):
                return None
            kind = _json_kind(value)
            errors = []
            for kinds, convert in options:
                if kind in kinds:
                    try:
                        return convert(value, path)
                    except BadInput as exc:
                        errors.append(str(exc))
            if errors:
                raise BadInput(errors[0])
            raise _mismatch(path, "a value of the union", value)

        return union

    def _json_kinds(self, node: Any) -> set[str]:
        """The JSON types a value of ``node`` can take in the kcp style."""
        if isinstance(node, str):
            return {"null": {"null"}, "boolean": {"bool"}, "int": {"int"}, "long": {"int"},
                    "float": {"int", "float", "str"}, "double": {"int", "float", "str"},
                    "bytes": {"str"}, "string": {"str"}}.get(node, set())
        if isinstance(node, list):
            return set().union(*(self._json_kinds(self.resolve(b)) for b in node))
        kind = node["type"]
        if node.get("logicalType") in _LOGICAL_FROM_JSON:
            return {"str", "int", "float"}
        return {"record": {"dict"}, "error": {"dict"}, "map": {"dict"}, "array": {"list"},
                "enum": {"str"}, "fixed": {"str"}}.get(kind) or self._json_kinds(kind)


def _from_data_uri(text: str) -> bytes:
    """The bytes of an RFC 2397 ``data:`` URI (base64 or percent-encoded)."""
    header, comma, data = text.partition(",")
    if not comma:
        raise ValueError("a data: URI without a comma")
    if header.endswith(";base64"):
        return pybase64.b64decode(data, validate=True)
    return urllib.parse.unquote_to_bytes(data)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", dict: "dict", list: "list"}.get(
        type(value), type(value).__name__)


def _mismatch(path: str, expected: str, value: Any) -> BadInput:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return BadInput(f"field {path or '(top level)'}: expected {expected}, got {shown}")


def _float_from_json(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    token = FLOAT_TOKENS.get(value) if isinstance(value, str) else None
    if token is None:
        raise _mismatch(path, "a number", value)
    return token


_FLOAT32_MAX = 3.4028234663852886e38


def _float32_from_json(value: Any, path: str) -> float:
    """A float field's value: one beyond float32's range would be written as infinity."""
    number = _float_from_json(value, path)
    if not -_FLOAT32_MAX <= number <= _FLOAT32_MAX and math.isfinite(number):
        try:
            struct.pack("<f", number)  # rounds to the nearest float32 or overflows
        except OverflowError:
            raise _mismatch(path, "a number within float's range (±3.4e38)", value) from None
    return number


def _check_float32(datum: Any, node: Any, named: dict[str, Any], path: str) -> None:
    """Refuse, as _float32_from_json does, a float field's value beyond float32's range in a
    datum of the ``avro`` JSON style (fastavro's JSON reader takes any number, its writer makes
    it infinite). A union is looked into by the Python type of its value."""
    if isinstance(node, str):
        node = named.get(node, node)
    if isinstance(node, list):
        for branch in node:
            branch = named.get(branch, branch) if isinstance(branch, str) else branch
            kind = branch["type"] if isinstance(branch, dict) else branch
            if kind == "float" and "double" in node:
                continue  # a float beyond float32 goes to the double branch
            if (kind == "float" and isinstance(datum, float)) or (
                    kind in ("record", "error", "map") and isinstance(datum, dict)) or (
                    kind == "array" and isinstance(datum, list)):
                _check_float32(datum, branch, named, path)
        return
    kind = node["type"] if isinstance(node, dict) else node
    if kind == "float" and isinstance(datum, float):
        _float32_from_json(datum, path)
    elif kind in ("record", "error") and isinstance(datum, dict):
        for field in node["fields"]:
            if field["name"] in datum:
                _check_float32(datum[field["name"]], field["type"], named,
                               f"{path}.{field['name']}" if path else field["name"])
    elif kind == "map" and isinstance(datum, dict):
        for key, value in datum.items():
            _check_float32(value, node["values"], named, f"{path}.{key}")
    elif kind == "array" and isinstance(datum, list):
        for number, item in enumerate(datum):
            _check_float32(item, node["items"], named, f"{path}[{number}]")


def _integer_from_json(bits: int) -> Callable[[Any, str], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def integer(value: Any, path: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if low <= value <= high:
                return value
            raise _mismatch(path, f"a {bits}-bit integer", value)
        raise _mismatch(path, "an integer", value)

    return integer


_INT_FROM_JSON = _integer_from_json(32)
_LONG_FROM_JSON = _integer_from_json(64)


def _checked(kind: str) -> Callable[[Any, str], Any]:
    python_type = {"string": str, "boolean": bool, "null": type(None)}[kind]

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, python_type):
            raise _mismatch(path, kind, value)
        return value

    return check


def _from_iso(parse: Callable[[str], Any], what: str) -> Callable[[Any, str], Any]:
    def convert(value: Any, path: str) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # the underlying Avro value, accepted as is
        try:
            return parse(value)
        except (TypeError, ValueError, decimal.InvalidOperation):
            raise _mismatch(path, what, value) from None

    return convert


_LOGICAL_FROM_JSON = {
    "timestamp-millis": _from_iso(dt.datetime.fromisoformat, "an ISO-8601 timestamp"),
    "timestamp-micros": _from_iso(dt.datetime.fromisoformat, "an ISO-8601 timestamp"),
    "local-timestamp-millis": _from_iso(dt.datetime.fromisoformat, "an ISO-8601 timestamp"),
    "local-timestamp-micros": _from_iso(dt.datetime.fromisoformat, "an ISO-8601 timestamp"),
    "date": _from_iso(dt.date.fromisoformat, "an ISO-8601 date"),
    "time-millis": _from_iso(dt.time.fromisoformat, "an ISO-8601 time"),
    "time-micros": _from_iso(dt.time.fromisoformat, "an ISO-8601 time"),
    "decimal": _from_iso(decimal.Decimal, "a decimal string"),
    "uuid": _from_iso(uuid.UUID, "a UUID string"),
}


# orjson reads an integer outside [-2^63, 2^64) as the nearest float: 10^29 became 1e+29. Such
# an integer has 20 digits or more, or is negative with 19; a document where a run of digits
# that long starts after something else than a decimal point or an exponent (floats have long
# runs: 0.000041099156078416854) is parsed again by Python's parser, which hands each integer
# to _exact_integer. The runs are found in C: digits made "0", what may precede a float's
# digits "x", the rest " " (ZTF's and Rubin's 19-digit ids are positive: never parsed twice).
_DIGIT_CLASSES = bytes(ord("0") if 0x30 <= c <= 0x39 else ord("x") if c in b".eE+" else
                       c if c == ord("-") else ord(" ") for c in range(256))
_TWENTY_DIGITS = b" " + b"0" * 20
_NEGATIVE_19 = b"-" + b"0" * 19
_ORJSON_INTEGERS = range(-(1 << 63), 1 << 64)


def _may_hold_long_integers(document: bytes) -> bool:
    classes = document.translate(_DIGIT_CLASSES)
    return (_TWENTY_DIGITS in classes or _NEGATIVE_19 in classes
            or classes.startswith(_TWENTY_DIGITS[1:]))


def _exact_integer(text: str) -> int:
    number = int(text)
    if number not in _ORJSON_INTEGERS and float(number) != number:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise BadInput(f"the integer {shown} does not fit in 64 bits and would become the float "
                       f"{float(number):g}; write it as a string (or as a float)")
    return number


def json_loads(document: bytes | str) -> Any:
    """A JSON document parsed by orjson (whose JSONDecodeError it raises), with no number
    silently changed: an integer beyond 64 bits that no float holds exactly is bad input.
    For documents read without a schema (with one, JsonToAvro checks each number's type): the
    scan costs about half of orjson's time on a 90 kB alert."""
    value = orjson.loads(document)
    raw = document.encode() if isinstance(document, str) else document
    if _may_hold_long_integers(raw):
        try:
            json.loads(raw, parse_int=_exact_integer)
        except (RecursionError, ValueError):  # nested past Python's parser, 4300+ digits
            raise BadInput("JSON too deeply nested or with too long a number to read exactly"
                           ) from None
    return value


class JsonToAvro:
    """Turns JSON documents into datums of a schema: the exact inverse of :class:`AvroToJson`."""

    def __init__(self, bytes_mode: str = "base64", style: str = "kcp") -> None:
        if bytes_mode is not None:
            check_bytes_mode(bytes_mode)
        self.bytes_mode = bytes_mode
        self.style = style
        self._converters: dict[Schema, Callable[[Any, str], Any]] = {}

    def __call__(self, document: bytes | str, schema: Schema) -> Any:
        if self.style == "avro":
            try:
                datum = next(iter(fastavro.json_reader(io.StringIO(
                    document.decode() if isinstance(document, bytes) else document),
                    schema.parsed)))
                # fastavro's JSON reader takes any integer for an int or a long, which its
                # writer would then encode as they are: an int of 2^40 is no int.
                validate(datum, schema.parsed, raise_errors=True)
                _check_float32(datum, schema.parsed, named_types(schema.parsed), "")
                return datum
            except ValidationError as exc:
                problems = "; ".join(str(e) for e in exc.errors) or str(exc)
                raise BadInput(f"not Avro-JSON of schema {schema.name}: {problems}") from None
            except Exception as exc:
                raise BadInput(f"not Avro-JSON of schema {schema.name}: {exc}") from None
        # orjson, not json_loads: the schema checks every number (an integer beyond 64 bits
        # read as a float is refused where the schema says int or long, and a float or double
        # field holds the nearest float of any number), and the fast path stays fast.
        try:
            value = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"invalid JSON: {exc}") from None
        return self.datum(value, schema)

    def datum(self, value: Any, schema: Schema) -> Any:
        """The Avro datum for an already-parsed JSON value."""
        convert = self._converters.get(schema)
        if convert is None:
            compiler = _InverseCompiler(schema.parsed, self.bytes_mode)
            convert = self._converters[schema] = compiler.build(schema.parsed)
        try:
            return convert(value, "")
        except RecursionError:
            raise BadInput(f"record nested too deeply for schema {schema.name}") from None
