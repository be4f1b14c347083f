"""``--pace``: replay records at the cadence they happened, faster, or at a fixed rate.

Broker and filter developers test against a real night at its real cadence.  Each record's
time is its own: ZTF's ``candidate.jd``, Rubin's ``diaSource.midpointMjdTai``, else the Kafka
timestamp.  ``original`` releases record n when as much wall time has passed since the first
record as night time separates them; ``Nx`` is N times faster; ``N/s`` ignores the times and
releases N records a second.  Records without a time, or earlier than one already released
(alerts are not strictly ordered), go at once.

The clock is injectable, so the pacing is tested without sleeping.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import UsageError
from .message import Message

JD_UNIX_EPOCH = 2440587.5  # the Julian date of 1970-01-01T00:00:00
MJD_UNIX_EPOCH = 40587.0
LONGEST_NAP = 0.25  # seconds: output, progress and Ctrl-C are looked after this often
_PACE = re.compile(r"(?:(original)|(\d+(?:\.\d*)?|\.\d+)x|(\d+(?:\.\d*)?|\.\d+)/s)")


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def parse_pace(text: str) -> tuple[float | None, float | None]:
    """(speed, rate): ``original`` is (1, None), ``2x`` (2, None), ``300/s`` (None, 300)."""
    match = _PACE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--pace {text!r}: expected original, Nx (e.g. 2x, 0.5x) or N/s "
                         "(e.g. 300/s)")
    original, speed, rate = match.groups()
    value = 1.0 if original else float(speed or rate)
    if value <= 0:
        raise UsageError(f"--pace {text!r}: must be more than zero")
    return (value, None) if rate is None else (None, value)


def event_time(message: Message) -> float | None:
    """When a record happened, in Unix seconds: the alert's own time, else its Kafka time."""
    datum = message.datum
    if isinstance(datum, dict):
        candidate = datum.get("candidate")
        if isinstance(candidate, dict) and isinstance(candidate.get("jd"), (int, float)):
            return (candidate["jd"] - JD_UNIX_EPOCH) * 86400.0
        source = datum.get("diaSource")
        if isinstance(source, dict) and isinstance(source.get("midpointMjdTai"), (int, float)):
            # TAI runs 37 s ahead of UTC: irrelevant to the intervals a replay keeps.
            return (source["midpointMjdTai"] - MJD_UNIX_EPOCH) * 86400.0
    if message.timestamp is not None:
        return message.timestamp / 1000.0
    return None


def _nothing() -> None:
    pass


class Pacer:
    """A stage holding each record until its time comes on ``clock``.

    ``on_wait`` runs between naps (at most LONGEST_NAP apart): the pipeline pushes out what
    was written, redraws the progress line and delivers a pending Ctrl-C there.
    """

    def __init__(self, pace: str, clock: Clock | None = None) -> None:
        self.speed, self.rate = parse_pace(pace)
        self.clock = clock or SystemClock()
        self.on_wait: Callable[[], None] = _nothing
        self.started: float | None = None  # wall clock at the first record
        self.first: float | None = None  # night time of the first record with one
        self.latest: float | None = None  # night time of the latest record released
        self.released = 0

    def __call__(self, message: Message) -> Message:
        moment = event_time(message)
        if self.started is None:
            self.started = self.clock.now()
        if moment is not None:
            if self.first is None:
                self.first = moment
            self.latest = moment if self.latest is None else max(self.latest, moment)
        due = self._due()
        while (wait := due - self.clock.now()) > 0:
            self.on_wait()
            self.clock.sleep(min(wait, LONGEST_NAP))
        self.released += 1
        return message

    def _due(self) -> float:
        assert self.started is not None
        if self.rate is not None:
            return self.started + self.released / self.rate
        if self.latest is None or self.first is None:
            return self.started
        return self.started + (self.latest - self.first) / self.speed

    def night_clock(self) -> str | None:
        """The night time replayed so far, for the progress line."""
        if self.latest is None:
            return None
        moment = dt.datetime.fromtimestamp(self.latest, dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def pacer_in(stages: list[Any]) -> Pacer | None:
    return next((stage for stage in stages if isinstance(stage, Pacer)), None)
