"""The process's streams and what they are connected to, looked at once.

Every decision that depends on a terminal (pretty or coloured JSON, cutout sizes instead of
base64, refusing binary output, a live progress line) is made from the *destination* of the
data, by :func:`kcp.plan.plan`, with this object: never from ``sys.stdout`` somewhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import BinaryIO, NoReturn, TextIO

# What pages long output on a terminal when $PAGER is not set, and how less behaves unless
# $LESS says otherwise (as git does): quit when it fits one screen, keep colours, leave the
# text on the screen.
DEFAULT_PAGER = "less"
DEFAULT_LESS = "FRX"


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

    def paged(self) -> tuple[Environment, Pager | None]:
        """This environment with stdout going through ``$PAGER`` (``less`` by default) to the
        terminal, and the pager to close at the end; unchanged, and no pager, when stdout is
        not a terminal, or ``$PAGER`` is empty, ``cat`` or not installed."""
        command = os.environ.get("PAGER", DEFAULT_PAGER)
        words = shlex.split(command) if self.stdout_isatty else []
        if not words or words == ["cat"] or shutil.which(words[0]) is None:
            return self, None
        pager = Pager(command, self.stdout)
        return dataclasses.replace(self, stdout=pager.stdin), pager


class Pager:
    """A running ``$PAGER`` whose stdin is the run's stdout."""

    def __init__(self, command: str, terminal: BinaryIO) -> None:
        self.process = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE,
                                        stdout=terminal,
                                        env={"LESS": DEFAULT_LESS, **os.environ})
        assert self.process.stdin is not None
        self.stdin: BinaryIO = self.process.stdin

    def close(self) -> None:
        """The end of the output: the pager shows the rest, until its reader quits it."""
        with contextlib.suppress(OSError):  # the reader quit it before the end (as | head)
            self.stdin.close()
        self.process.wait()


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
