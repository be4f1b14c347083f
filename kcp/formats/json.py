"""JSON: one document per record, mapped to and from Avro by kcp.codec.jsonmap.

Written as JSON Lines.  Read as what the file holds: JSON Lines, one JSON array of records, or
documents one after the other however they are laid out (a pretty-printed alert, as the 2018 kcp
prototype wrote ``.json`` files).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import orjson

from ..codec import FILES_MODE, AvroToJson, JsonToAvro, inline_bytes_mode, json_loads
from ..codec.native import JsonDocument
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options
from .cutout_files import CutoutFiles
from .lines import LineStreamWriter, Text, cut_after_last_line, decoded, read_lines


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
                message.datum = json_loads(message.value)
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"invalid JSON: {exc}") from None
        message.schema = schema
        message.decoded = True
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        # The first non-blank line tells the layout: a whole document on it means JSON Lines
        # (read line by line, the fast path); else documents span lines, or it opens an array.
        limit = self.limits.max_line_bytes
        head = b""
        while line := stream.readline(limit + 1):
            head += line
            if line.strip():
                break
        else:
            return
        whole = Prepended(head, stream)
        if not line.lstrip().startswith(b"["):
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            else:
                yield from read_lines(self.decode, whole, source, limit)
                return
        chunks = iter(lambda: whole.read(1 << 20), b"")
        try:
            for number, value in json_values(chunks, limit):
                message = Message(value=value, source=source, position=f"line {number}")
                yield from decoded(self.decode, message, message.where())
        except BadInput as exc:
            yield Message(source=source, error=exc.at(source))


class Prepended:
    """A stream some of whose first bytes were read already: they are read again first."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head = head
        self.stream = stream

    def readline(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.readline(size)
        end = self.head.find(b"\n") + 1 or len(self.head)
        if 0 <= size < end:
            end = size
        line, self.head = self.head[:end], self.head[end:]
        if line.endswith(b"\n") or len(line) == size:
            return line
        return line + self.stream.readline(-1 if size < 0 else size - len(line))

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        end = len(self.head) if size < 0 else min(size, len(self.head))
        data, self.head = self.head[:end], self.head[end:]
        return data


_STRUCTURE = re.compile(rb'["{}\[\],]|[^\s"{}\[\],]+')
# Possessive: a plain (?:[^"\\]|\\.)* keeps a backtracking state per character, ~120 bytes
# each (a 3 MB string took 370 MB to scan).
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+"', re.S)
_OPENERS = {ord("{"): ord("}"), ord("["): ord("]")}


def json_values(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[int, bytes]]:
    """The top-level JSON values of ``chunks`` (or the items of one top-level array), each with
    the line it starts on, found by their brackets without parsing them.

    A value with unbalanced brackets comes out as it is, for the parser to report; the values
    are held one at a time, whatever the size of the input, and one over ``limit`` bytes (a
    document is parsed whole: --max-line-size) is bad input.
    """
    buffer = bytearray()
    line = 1  # of buffer[0]
    position = 0  # scanned up to here
    start: int | None = None  # of the value being read
    closers: list[int] = []
    base = 0  # the nesting depth values start at (1 inside the array)
    first = True
    more = iter(chunks)
    ended = False

    def refill() -> bool:
        """Read on; False at the end of the input."""
        chunk = next(more, None)
        if chunk is None:
            return False
        buffer.extend(chunk)
        if len(buffer) > limit + len(chunk):
            raise BadInput(f"a JSON document from line {line} is longer than --max-line-size "
                           f"{limit >> 20} MB")
        return True

    while True:
        match = _STRUCTURE.search(buffer, position)
        # A token touching the end of what was read may go on in the next chunk.
        if match is None or (match.end() == len(buffer) and not ended):
            if ended:
                break
            ended = not refill()
            continue
        char = buffer[match.start()]
        if char == ord('"'):
            rest = _STRING_REST.match(buffer, match.end())
            if rest is None:
                if ended:  # an unterminated string: the value is what is left
                    start = match.start() if start is None else start
                    break
                ended = not refill()
                continue
            end = rest.end()
        else:
            end = match.end()
        if start is None:
            if first and char == ord("["):  # one array: its items are the values
                base, position = 1, end
                closers.append(ord("]"))
                first = False
                continue
            first = False
            if base and char == ord("]") and len(closers) == base:  # the array's end
                base, position = 0, end
                closers.pop()
                continue
            if char == ord(","):
                position = end
                continue
            start = match.start()
        if char in _OPENERS:
            closers.append(_OPENERS[char])
        elif char in (ord("}"), ord("]")) and len(closers) > base:
            closers.pop()
        position = end
        if len(closers) == base:
            value = bytes(buffer[start:end])
            line += buffer.count(b"\n", 0, start)
            yield line, value
            line += value.count(b"\n")
            del buffer[:end]
            position, start = 0, None
    if start is not None:
        line += buffer.count(b"\n", 0, start)
        yield line, bytes(buffer[start:])


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
        mode = options.bytes_mode or "base64"
        self.cutout_files = None
        if mode.startswith(FILES_MODE):
            if options.json_style != "kcp":
                raise UsageError("--bytes file:DIR needs --json-style kcp")
            self.cutout_files = CutoutFiles(mode.removeprefix(FILES_MODE))
        self.to_json = AvroToJson(inline_bytes_mode(mode), options.json_style,
                                  options.mapped)
        self.option = orjson.OPT_INDENT_2 if options.pretty else 0
        self.colour = options.colour

    def encode(self, message: Message) -> bytes:
        datum = message.datum
        if type(datum) is Text:  # a text payload shown on a terminal (Options.show_text)
            return datum.rstrip("\n").encode()
        if type(datum) is JsonDocument:  # transcoded natively, already what to_json would write
            document = datum.text
            if self.option:
                document = orjson.dumps(orjson.loads(document), option=self.option)
        else:
            if self.cutout_files is not None:
                self.cutout_files.replace(message)
            document = self.to_json(datum, message.schema, self.option)
        return colourize(document) if self.colour else document

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream)

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        return LineStreamWriter(stream, self.encode)


def documents_suffice(options: Options, sink: object) -> bool:
    """Whether records may reach ``sink`` as finished JSON documents (kcp.codec.native): it
    writes JSON Lines to a stream (stdout, a file), or JSON payloads to Kafka (``--to json``),
    in the kcp style, and no stage reads record values (--where, --map, --pipe-through,
    --bytes file:DIR, --pace: the alerts' own times) or reshapes them (--reader-schema).
    --since/--until read only Kafka timestamps; --fields is done by the transcoder itself."""
    traits = getattr(sink, "traits", None)
    writes_json = (isinstance(getattr(sink, "format_writer", None), JsonWriter)
                   or (traits is not None and traits.payloads and options.write_format == "json"))
    return (writes_json
            and options.json_style == "kcp" and not options.steps
            and not (options.bytes_mode or "").startswith(FILES_MODE)
            and options.schemas.reader is None and not options.pace)
