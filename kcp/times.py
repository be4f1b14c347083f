"""The one grammar of times and durations: ``-o @TIME``, ``--since/--until TIME``, ``--idle``.

A TIME is ISO-8601 (naive means UTC), epoch milliseconds, ``now``, or a moment before now such as
``-30s -10m -2h -3d -1w``.  A DURATION is a number with a unit of the same set (``500ms 90s 30m
2h 1d 1w``; a bare number is seconds).
"""

from __future__ import annotations

import datetime as dt
import re
import time

from .errors import UsageError

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AMOUNT = r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)"
_DURATION = re.compile(_AMOUNT + "?", re.ASCII)
_BEFORE_NOW = re.compile("-" + _AMOUNT, re.ASCII)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_duration(text: str) -> float:
    """A duration in seconds from ``90s``, ``30m``, ``2h``, ``1d``, ``500ms`` or plain seconds."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise UsageError(f"not a duration: {text!r} (expected e.g. 90s, 30m, 2h, or seconds)")
    seconds = float(found[1]) * _UNIT_SECONDS[found[2] or "s"]
    if seconds <= 0:
        raise UsageError(f"not a duration: {text!r} (it must be longer than zero)")
    return seconds


def parse_time(text: str, now: float | None = None) -> int:
    """A moment as epoch milliseconds (see the module's grammar); ``now`` is epoch seconds."""
    text = text.strip()
    now = time.time() if now is None else now
    if text.isascii() and text.isdigit():
        return int(text)
    if text == "now":
        return round(now * 1000)
    if before := _BEFORE_NOW.fullmatch(text):
        return round((now - float(before[1]) * _UNIT_SECONDS[before[2]]) * 1000)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return (moment - _EPOCH) // dt.timedelta(milliseconds=1)
    except (ValueError, OverflowError):
        raise UsageError(f"not a time: {text!r} (expected ISO-8601 like 2018-07-25T04:00:00Z, "
                         "epoch milliseconds, or -30s, -10m, -2h, -3d)") from None
