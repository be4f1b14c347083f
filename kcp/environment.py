"""The process's streams and what they are connected to, looked at once.

Every decision that depends on a terminal (pretty or coloured JSON, cutout sizes instead of
base64, refusing binary output, a live progress line) is made from the *destination* of the
data, by :func:`kcp.plan.plan`, with this object: never from ``sys.stdout`` somewhere else.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from dataclasses import dataclass
from typing import BinaryIO, NoReturn, TextIO


@dataclass(frozen=True)
class Environment:
    stdin: BinaryIO
    stdout: BinaryIO
    stderr: TextIO
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    #: Colours are allowed on a terminal (https://no-color.org: NO_COLOR set forbids them).
    colour_allowed: bool = True

    @classmethod
    def from_process(cls) -> Environment:
        """The streams of this process (the command line's environment)."""
        return cls(stdin=_binary(sys.stdin, "stdin"), stdout=_binary(sys.stdout, "stdout"),
                   stderr=sys.stderr or _Closed("stderr"),  # type: ignore[arg-type]
                   stdin_isatty=_isatty(sys.stdin), stdout_isatty=_isatty(sys.stdout),
                   stderr_isatty=_isatty(sys.stderr),
                   colour_allowed="NO_COLOR" not in os.environ)


class _Closed(io.RawIOBase):
    """A standard stream the shell closed (``>&-``): Python leaves ``None`` there; using it is
    the error the operating system would give."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = f"<{name}>"

    def _refuse(self, *args: object) -> NoReturn:
        raise OSError(errno.EBADF, "Bad file descriptor (the stream is closed)")

    readinto = write = _refuse

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True


def _binary(stream: TextIO | None, name: str) -> BinaryIO:
    return _Closed(name) if stream is None else stream.buffer  # type: ignore[return-value]


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # closed (>&-) or replaced
        return False
