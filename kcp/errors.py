"""Exit statuses and the error types that carry them.

Every failure kcp reports is a :class:`KcpError`: one line for stderr, naming the input and the
position, and the exit status the CLI returns.  Nothing else reaches the user without ``--debug``.
"""

from __future__ import annotations

import enum
import re

# user:password@ in a URL (a registry's, a broker's): never printed.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def without_userinfo(text: str) -> str:
    """``text`` with the credentials of every URL in it left out."""
    return _USERINFO.sub(r"\1", text)


# Control characters from input (a tar member's name, a parser's message) are shown escaped:
# an error stays one line, and cannot move the cursor or retitle the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class ExitStatus(enum.IntEnum):
    """The documented exit statuses of every kcp command."""

    OK = 0
    RUNTIME_ERROR = 1
    USAGE_ERROR = 2
    BAD_INPUT = 3
    TRANSPORT_ERROR = 4
    INTERRUPTED = 130


EXIT_STATUS_HELP = {
    ExitStatus.OK: "success (also when a downstream pipe such as `| head` closes early)",
    ExitStatus.RUNTIME_ERROR: "runtime error",
    ExitStatus.USAGE_ERROR: "usage error (bad option, address or schema)",
    ExitStatus.BAD_INPUT: "bad input data under --on-error=fail",
    ExitStatus.TRANSPORT_ERROR:
        "broker or transport failure (unreachable, refused, delivery failed)",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}


class KcpError(Exception):
    """A failure to report as one line on stderr and an exit status."""

    status = ExitStatus.RUNTIME_ERROR

    def __init__(self, message: str, *, where: str | None = None) -> None:
        message = without_userinfo(message)
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return printable(f"{self.where}: {self.message}" if self.where else self.message)

    def at(self, where: str) -> KcpError:
        """Return the same error, located at ``where`` unless it already is."""
        if self.where is None:
            self.where = where
        return self


class UsageError(KcpError):
    status = ExitStatus.USAGE_ERROR


class BadInput(KcpError):
    """A record or payload that cannot be decoded or encoded."""

    status = ExitStatus.BAD_INPUT


class TransportError(KcpError):
    status = ExitStatus.TRANSPORT_ERROR


class Terminated(Exception):
    """SIGTERM: stop like Ctrl-C, but as a requested shutdown (exit status 0)."""
