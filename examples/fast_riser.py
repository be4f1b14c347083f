"""A kcp stage that flags fast-rising ZTF transients (a worked example of ``--map``).

A real detection (real-bogus score at least ``MIN_RB``) that brightened by at least
``MIN_RISE`` magnitudes per day since the previous detection in the same filter is a fast
riser: young supernovae, novae, kilonova candidates.  Everything else is dropped.

    kcp cp -g riser ztf:ztf_20180725_programid1 local:ztf_fast_risers \\
        --map examples/fast_riser.py:classify

The two fields it adds are declared in ``OUTPUT_FIELDS``, so the output schema is the alert
schema extended with them, and readers of plain alerts still read the output.
"""

from __future__ import annotations

from typing import Any

MIN_RB = 0.5
MIN_RISE = 0.5  # magnitudes per day; smaller magnitude means brighter

OUTPUT_FIELDS = [
    {"name": "kcp_rise_rate", "type": ["null", "double"], "default": None,
     "doc": "Brightening in mag/day since the previous detection in the same filter"},
    {"name": "kcp_fast_riser", "type": ["null", "boolean"], "default": None,
     "doc": "True when the rise rate is at least MIN_RISE mag/day on a real detection"},
]


def setup(options: Any) -> None:
    """Called once before the first alert (a real classifier would load its model here)."""


def rise_rate(alert: dict[str, Any]) -> float | None:
    """Magnitudes per day gained since the latest earlier detection in the same filter."""
    now = alert["candidate"]
    earlier = [p for p in alert.get("prv_candidates") or ()
               if p.get("candid") is not None and p.get("magpsf") is not None
               and p.get("fid") == now["fid"] and p["jd"] < now["jd"]]
    if not earlier:
        return None
    previous = max(earlier, key=lambda p: p["jd"])
    return (previous["magpsf"] - now["magpsf"]) / (now["jd"] - previous["jd"])


def annotate(alert: dict[str, Any]) -> dict[str, Any]:
    """Every alert, with its rise rate and fast-riser flag."""
    rate = rise_rate(alert)
    real = (alert["candidate"].get("rb") or 0.0) >= MIN_RB
    alert["kcp_rise_rate"] = rate
    alert["kcp_fast_riser"] = rate is not None and rate >= MIN_RISE and real
    return alert


def classify(alert: dict[str, Any]) -> dict[str, Any] | None:
    """Fast risers only, annotated; None drops the others."""
    annotated = annotate(alert)
    return annotated if annotated["kcp_fast_riser"] else None
