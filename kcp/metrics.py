"""What a long-running kcp tells its operators: Prometheus metrics and periodic JSON stats.

Both read the pipeline's live :class:`kcp.pipeline.Summary` (and the source's lag, the sink's
open archives) when asked, so they cost nothing per record.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from .errors import UsageError


def _age_seconds(summary: Any) -> float | None:
    if summary is None or summary.last_timestamp is None:
        return None
    return max(0.0, time.time() - summary.last_timestamp / 1000)


def _lag(source: Any) -> int | None:
    lag = getattr(source, "lag", None)
    return lag() if callable(lag) else None


class Observers:
    """Calls each observer with the summary, as the pipeline's ``progress`` callback."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def __call__(self, summary: Any) -> None:
        for observer in self.observers:
            observer(summary)

    def done(self) -> None:
        for observer in self.observers:
            finish = getattr(observer, "done", None)
            if finish is not None:
                finish()


class StatsLines:
    """``--stats-interval S``: one JSON line on stderr every S seconds, for log collectors."""

    def __init__(self, interval: float, source: Any, stream: TextIO = sys.stderr) -> None:
        self.interval = interval
        self.source = source
        self.stream = stream
        self.next_line = time.monotonic() + interval
        self.last = (time.monotonic(), 0)

    def __call__(self, summary: Any) -> None:
        now = time.monotonic()
        if now < self.next_line:
            return
        self.next_line = now + self.interval
        since, records_then = self.last
        self.last = (now, summary.records)
        age = _age_seconds(summary)
        line = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": summary.records, "bytes_in": summary.bytes_in,
            "skipped": summary.skipped,
            "records_per_s": round((summary.records - records_then) / (now - since), 1),
            "lag": _lag(self.source),
            "last_message_age_s": None if age is None else round(age, 3),
        }
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


class PrometheusMetrics:
    """``--metrics-port [HOST:]PORT``: a Prometheus endpoint read from the live run."""

    def __init__(self, address: str, source: Any, sink: Any) -> None:
        try:
            from prometheus_client import start_http_server
            from prometheus_client.core import REGISTRY
        except ImportError:
            raise UsageError("--metrics-port needs prometheus-client: "
                             "pip install prometheus-client") from None
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise UsageError(f"--metrics-port {address}: expected [HOST:]PORT")
        self.source, self.sink, self.summary = source, sink, None
        REGISTRY.register(self)
        try:
            start_http_server(int(port), addr=host or "0.0.0.0")
        except OSError as exc:
            raise UsageError(f"--metrics-port {address}: {exc.strerror}") from None

    def __call__(self, summary: Any) -> None:
        self.summary = summary

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        summary = self.summary
        records = summary.records if summary else 0
        yield CounterMetricFamily("kcp_records", "Records written to the sink", value=records)
        yield CounterMetricFamily("kcp_bytes_in", "Payload bytes read from the source",
                                  value=summary.bytes_in if summary else 0)
        yield CounterMetricFamily("kcp_errors", "Bad records skipped or dead-lettered",
                                  value=summary.skipped if summary else 0)
        lag = _lag(self.source)
        if lag is not None:
            yield GaugeMetricFamily("kcp_lag_messages", "Messages not yet read", value=lag)
        age = _age_seconds(summary)
        if age is not None:
            yield GaugeMetricFamily("kcp_last_message_age_seconds",
                                    "Age of the last message read", value=age)
        archives = getattr(self.sink, "open_archives", None)
        if archives is not None:
            yield GaugeMetricFamily("kcp_open_archives", "Archives being written",
                                    value=archives)
