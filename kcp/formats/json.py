"""JSON Lines: one JSON document per record, mapped to and from Avro by kcp.codec.jsonmap."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

import orjson

from ..codec import AvroToJson, JsonToAvro
from ..codec.native import JsonDocument
from ..errors import BadInput
from ..message import Message
from ..options import Options
from .lines import LineStreamWriter, cut_after_last_line, read_lines


class JsonReader:
    def __init__(self, options: Options) -> None:
        self.schemas = options.schemas
        self.limits = options.limits
        self.to_avro = JsonToAvro(options.bytes_mode, options.json_style)

    def decode(self, message: Message) -> list[Message]:
        if message.value is None:
            raise BadInput("empty payload (a tombstone?) where a JSON document was expected")
        schema = self.schemas.default
        if schema is not None:
            message.datum = self.to_avro(message.value, schema)
        else:
            try:
                message.datum = orjson.loads(message.value)
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"invalid JSON: {exc}") from None
        message.schema = schema
        message.decoded = True
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        return read_lines(self.decode, stream, source, self.limits.max_line_bytes)


_JSON_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d[\d.eE+-]*)|\b(true|false|null)\b')


def _paint(match: re.Match[bytes]) -> bytes:
    text, colon, number, _ = match.groups()
    if text is not None:
        return (b"\x1b[34m" if colon else b"\x1b[32m") + text + b"\x1b[0m" + (colon or b"")
    return (b"\x1b[36m" if number is not None else b"\x1b[33m") + match.group(0) + b"\x1b[0m"


def colourize(document: bytes) -> bytes:
    """ANSI colours for JSON read on a terminal: keys blue, strings green, numbers cyan."""
    return _JSON_TOKEN.sub(_paint, document)


class JsonWriter:
    def __init__(self, options: Options) -> None:
        self.to_json = AvroToJson(options.bytes_mode, options.json_style)
        self.option = orjson.OPT_INDENT_2 if options.pretty else 0
        self.colour = options.colour

    def encode(self, message: Message) -> bytes:
        datum = message.datum
        if type(datum) is JsonDocument:  # transcoded natively, already what to_json would write
            document = datum.text
            if self.option:
                document = orjson.dumps(orjson.loads(document), option=self.option)
        else:
            document = self.to_json(datum, message.schema, self.option)
        return colourize(document) if self.colour else document

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream)

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        return LineStreamWriter(stream, self.encode)


def documents_suffice(options: Options, sink: object) -> bool:
    """Whether records may reach ``sink`` as finished JSON documents (kcp.codec.native): it
    writes JSON Lines to a stream (stdout, a file) in the kcp style, and no stage reads record
    values (--where, --map, --pipe-through, --fields) or reshapes them (--reader-schema).
    --since/--until read only Kafka timestamps."""
    return (isinstance(getattr(sink, "format_writer", None), JsonWriter)
            and options.json_style == "kcp" and not options.steps and not options.fields
            and options.schemas.reader is None)
