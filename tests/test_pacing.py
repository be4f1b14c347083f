"""--pace: a night replayed at its own cadence, tested on a fake clock (nothing sleeps)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import fastavro
import pytest
from kcptest import kcp_env, run_kcp

import kcp
from kcp.errors import UsageError
from kcp.message import Message
from kcp.pacing import JD_UNIX_EPOCH, LONGEST_NAP, Pacer, parse_pace
from kcp.pipeline import CallbackSink
from kcp.synth import iter_alerts, load_ztf_like_schema, write_night


class FakeClock:
    """Time passes only when slept."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.naps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.time += seconds


def ztf(seconds: float) -> Message:
    return Message(datum={"candidate": {"jd": 2460000.5 + seconds / 86400}})


def rubin(seconds: float) -> Message:
    return Message(datum={"diaSource": {"midpointMjdTai": 61000.0 + seconds / 86400}})


def kafka(seconds: float) -> Message:
    return Message(datum={"no": "time"}, timestamp=int(1_700_000_000_000 + seconds * 1000))


def released(pace: str, messages: list[Message]) -> list[float]:
    """When each message leaves the pacer, in seconds after the first."""
    clock = FakeClock()
    pacer = Pacer(pace, clock)
    times = []
    for message in messages:
        pacer(message)
        times.append(clock.time - 1000.0)
    assert all(nap <= LONGEST_NAP + 1e-9 for nap in clock.naps)
    return times


@pytest.mark.parametrize("make", [ztf, rubin, kafka])
def test_original_pace_keeps_the_intervals_of_the_records_own_times(make):
    # The fourth record is earlier than one already released: it goes at once.
    times = released("original", [make(s) for s in (0, 10, 10, 5, 70)])
    assert times == pytest.approx([0, 10, 10, 10, 70], abs=1e-3)


def test_nx_is_n_times_faster_and_n_per_second_ignores_the_times():
    assert released("2x", [ztf(s) for s in (0, 10, 70)]) == pytest.approx([0, 5, 35], abs=1e-3)
    assert released("0.5x", [ztf(s) for s in (0, 3)]) == pytest.approx([0, 6], abs=1e-3)
    assert released("4/s", [ztf(s) for s in (0, 100, 0, 7)]) == \
        pytest.approx([0, 0.25, 0.5, 0.75])


def test_records_without_a_time_go_at_once():
    assert released("original", [Message(datum=[1]), ztf(0), Message(datum="x"), ztf(30)]) \
        == pytest.approx([0, 0, 0, 30], abs=1e-3)


@pytest.mark.parametrize("text", ["fast", "0x", "x", "-2x", "10/m", ""])
def test_a_bad_pace_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--pace"):
        parse_pace(text)


class RecordingSink(CallbackSink):
    """Logs when each record is written and when output is pushed out."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, float, object]] = []

    def write(self, message: Message) -> None:
        self.events.append(("write", self.clock.time, message.datum["candidate"]["jd"]))

    def idle(self) -> None:
        self.events.append(("idle", self.clock.time, None))



def test_a_synthetic_night_replays_at_its_cadence_through_the_pipeline(tmp_path: Path):
    # Exposures 39 s apart, a late alert out of order, a gap of 11 minutes.
    seconds = [0, 0, 39, 39, 78, 60, 117, 300, 300, 301, 1000, 1000]
    alerts = list(iter_alerts(len(seconds), seed=11))
    for alert, offset in zip(alerts, seconds, strict=True):
        alert["candidate"]["jd"] = alerts[0]["candidate"]["jd"] + offset / 86400
    with open(tmp_path / "night.avro", "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(load_ztf_like_schema()), alerts)
    clock = FakeClock()
    sink = RecordingSink(clock)
    replay = kcp.plan([str(tmp_path / "night.avro")], sink, kcp.Options(quiet=True))
    replay.stages = [Pacer("600x", clock)]  # the plan's own pacer would sleep on the real clock
    summary = replay.execute()
    writes = [(at, jd) for kind, at, jd in sink.events if kind == "write"]
    assert len(writes) == summary.records == len(seconds)
    first_at, first_jd = writes[0]
    latest = first_jd
    for at, jd in writes:
        latest = max(latest, jd)
        assert at - first_at == pytest.approx((latest - first_jd) * 86400 / 600, abs=1e-3)
    assert writes[-1][0] - first_at == pytest.approx(1000 / 600, abs=1e-3)
    # What was written goes out while the next record waits for its time.
    kinds = [kind for kind, _, _ in sink.events]
    assert "idle" in kinds[kinds.index("write"):]
    night_end = (latest - JD_UNIX_EPOCH) * 86400
    assert summary.line().endswith("replayed up to " + dt.datetime.fromtimestamp(
        night_end, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def test_pace_from_the_installed_kcp(tmp_path: Path):
    write_night(tmp_path / "night.avro", 6, seed=2)
    env = kcp_env(None, tmp_path)
    paced = run_kcp(["cp", str(tmp_path / "night.avro"), "-", "--pace", "1000/s", "--progress"],
                    env)
    assert paced.returncode == 0, paced.stderr
    assert len(paced.stdout.splitlines()) == 6
    assert b"replayed up to 2018-" in paced.stderr
    bad = run_kcp(["cp", str(tmp_path / "night.avro"), "-", "--pace", "fast"], env)
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1
