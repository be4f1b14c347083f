"""One line per record shaped by a template, as ``kcat -f`` and ``rpk -f`` print them: keys,
offsets and values side by side without an envelope (``-F '%t %p %o %k %s'``).

Directives: ``%t`` topic, ``%p`` partition, ``%o`` offset, ``%k`` key, ``%T`` timestamp (ms),
``%h`` headers (``name=value,...``), ``%s`` the value (the decoded record as compact JSON, the
payload as text when nothing decoded it), ``%S`` and ``%K`` the sizes of the payload and the
key in bytes, ``%%`` a percent sign; ``\\n``, ``\\t`` and ``\\\\`` are escapes.  Each record
ends with a newline (one at the end of the template is not doubled).  Output only: a template
cannot be read back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..codec import AvroToJson
from ..errors import UsageError
from ..message import Message
from ..options import Options
from .lines import LineStreamWriter, cut_after_last_line

DEFAULT_TEMPLATE = "%t [%p] @%o %k: %s"
_PIECE = re.compile(r"%(.)|\\(.)|[^%\\]+|[%\\]$", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def _text(data: bytes | None) -> bytes:
    return b"" if data is None else data


def _headers(message: Message) -> bytes:
    return b",".join(name.encode() + b"=" + _text(value) for name, value in message.headers or ())


def _number(value: int | None) -> bytes:
    return b"" if value is None else str(value).encode()


class TemplateWriter:
    def __init__(self, options: Options) -> None:
        self.to_json = AvroToJson(options.bytes_mode, options.json_style, options.mapped)
        template = (options.template or DEFAULT_TEMPLATE).removesuffix("\\n").removesuffix("\n")
        fields: dict[str, Callable[[Message], bytes]] = {
            "t": lambda m: (m.topic or "").encode(),
            "p": lambda m: _number(m.partition),
            "o": lambda m: _number(m.offset),
            "k": lambda m: _text(m.key),
            "T": lambda m: _number(m.timestamp),
            "h": _headers,
            "s": self._value,
            "S": lambda m: _number(None if m.value is None else len(m.value)),
            "K": lambda m: _number(None if m.key is None else len(m.key)),
        }
        self.pieces: list[bytes | Callable[[Message], bytes]] = []
        for match in _PIECE.finditer(template):
            directive, escape = match.group(1), match.group(2)
            if directive is not None:
                if directive == "%":
                    self.pieces.append(b"%")
                elif directive in fields:
                    self.pieces.append(fields[directive])
                else:
                    raise UsageError(f"--format-template: unknown directive %{directive} "
                                     "(known: %t %p %o %k %T %h %s %S %K %%)")
            elif escape is not None:
                self.pieces.append(_ESCAPES.get(escape, "\\" + escape).encode())
            else:
                self.pieces.append(match.group(0).encode())

    def _value(self, message: Message) -> bytes:
        if message.decoded:
            return self.to_json(message.datum, message.schema, 0)
        return _text(message.value)

    def encode(self, message: Message) -> bytes:
        return b"".join(piece if isinstance(piece, bytes) else piece(message)
                        for piece in self.pieces)

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream)

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        return LineStreamWriter(stream, self.encode)


class TemplateReader:
    def __init__(self, options: Options) -> None:
        raise UsageError("--from template: a template is for output only; read records as "
                         "JSON or with --envelope")

    def decode(self, message: Message) -> list[Message]:  # never reached: __init__ refuses
        raise NotImplementedError

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        raise NotImplementedError
