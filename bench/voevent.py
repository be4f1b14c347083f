"""VOEvent conversion speed: packets per second through kcp's VOEvent format, one process.

On the real packets of ../shared/data/voevent (each well-formed one, converted many times over),
and on kcp's synthetic ZTF alerts for the alert -> VOEvent mapping:

- XML -> record:  parse (hardened lxml) and build the VOEvent record;
- XML -> JSON:    the same, then the record as a JSON line (what `kcp convert` writes);
- JSON -> XML:    a JSON line back into the packet (`kcp convert --to voevent`);
- record -> XML:  the writer alone;
- ZTF -> XML:     a synthetic ZTF alert (30-day history table) mapped onto VOEvent 2.0.

    python bench/voevent.py [--seconds S]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from kcp.codec import AvroToJson, Schema
from kcp.formats.voevent import (
    AlertMapper,
    hardened_parser,
    read_packet,
    voevent_schema,
    write_packet,
)
from kcp.synth import iter_alerts, load_ztf_like_schema

PACKETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "voevent" / "packets"


def real_packets() -> list[bytes]:
    parser = hardened_parser()
    packets = []
    for path in sorted(PACKETS.rglob("*.xml")):
        data = path.read_bytes()
        try:
            read_packet(data, parser)
        except Exception:
            continue  # the one packet that is not well-formed
        packets.append(data)
    return packets


def rate(function: Callable[[object], object], items: list, seconds: float) -> float:
    """Items per second, the best of several rounds lasting about ``seconds`` in all."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        for item in items:
            function(item)
        best = max(best, len(items) / (time.perf_counter() - started))
        if time.perf_counter() > deadline:
            return best


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    seconds = arguments.parse_args().seconds
    parser = hardened_parser()
    schema = voevent_schema()
    to_json = AvroToJson()
    packets = real_packets()
    if not packets:
        print(f"no packets in {PACKETS}", file=sys.stderr)
        return 1
    records = [read_packet(p, parser) for p in packets]
    lines = [to_json(r, schema) for r in records]
    size = sum(map(len, packets)) / len(packets)

    ztf_schema = Schema(load_ztf_like_schema())
    alerts = list(iter_alerts(200, seed=1))
    mapper = AlertMapper("ivo://kcp.local/alerts", "reference")

    rows = [
        ("XML -> record", rate(lambda p: read_packet(p, parser), packets, seconds)),
        ("XML -> JSON", rate(lambda p: to_json(read_packet(p, parser), schema), packets,
                             seconds)),
        ("JSON -> XML", rate(lambda line: write_packet(orjson.loads(line), parser), lines,
                             seconds)),
        ("record -> XML", rate(lambda r: write_packet(r, parser), records, seconds)),
        ("ZTF -> XML", rate(lambda a: write_packet(mapper(a, ztf_schema), parser), alerts,
                            seconds)),
    ]
    print(f"{len(packets)} real packets ({size / 1000:.1f} kB on average), 200 synthetic ZTF "
          f"alerts; Python {platform.python_version()} on {platform.machine()}")
    print(f"{'conversion':<16}{'per second':>12}{'us each':>10}")
    for name, per_second in rows:
        print(f"{name:<16}{per_second:>12,.0f}{1e6 / per_second:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
