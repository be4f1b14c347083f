"""make bench-codec: kcp's Avro core against the ceiling and the loop a user would write.

Measured in one run on the same alert payloads (one OCF per message, as ZTF sends them): the real
ZTF alerts of ../shared/data when present, else (and also) kcp's synthetic ones.

- ceiling: fastavro.schemaless_reader on the bodies alone, the schema parsed beforehand;
- naive:   fastavro.reader(BytesIO(payload)) per message, + json.dumps (bytes as base64);
- kcp:     kcp's decode of the same OCF payloads, to dicts and to JSON Lines.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fastavro

from kcp.codec import AvroToJson, SchemaStore, decode_payload
from kcp.codec.framing import iter_ocf_blocks, parse_ocf_header
from kcp.codec.limits import Limits
from kcp.synth import iter_alerts, load_ztf_like_schema

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf"


def ocf_payload(record: dict, parsed: dict) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, parsed, [record])
    return out.getvalue()


def real_payloads() -> list[bytes]:
    """Each good real ZTF alert as the single-record OCF ZTF would send."""
    payloads = []
    for path in sorted(SHARED.rglob("*.avro")):
        try:
            with open(path, "rb") as stream:
                reader = fastavro.reader(stream)
                schema = reader.writer_schema
                records = list(reader)
        except Exception:
            continue  # the corrupt files PROVENANCE.md lists
        payloads += [ocf_payload(r, schema) for r in records]
    return payloads


def synthetic_payloads(n: int) -> list[bytes]:
    parsed = fastavro.parse_schema(load_ztf_like_schema())
    return [ocf_payload(alert, parsed) for alert in iter_alerts(n, seed=1)]


def timed(function: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def measure(payloads: list[bytes], repeat: int) -> dict[str, float]:
    store = SchemaStore()
    bodies = []
    for payload in payloads:  # the ceiling gets bodies and parsed schemas for free
        schema, codec, sync, pos = parse_ocf_header(payload, store)
        for _, block in iter_ocf_blocks(payload, codec, sync, pos, Limits()):
            bodies.append((block, schema.parsed))

    def ceiling() -> None:
        for body, parsed in bodies:
            fastavro.schemaless_reader(io.BytesIO(body), parsed, None)

    def naive_json() -> None:
        for payload in payloads:
            for record in fastavro.reader(io.BytesIO(payload)):
                json.dumps(record, default=lambda v: base64.b64encode(v).decode()
                           if isinstance(v, bytes) else str(v))

    kcp_store = SchemaStore()
    to_json = AvroToJson()

    def kcp_dicts() -> None:
        for payload in payloads:
            decode_payload(payload, kcp_store)

    def kcp_json() -> None:
        for payload in payloads:
            for datum, schema in decode_payload(payload, kcp_store):
                to_json(datum, schema)

    return {name: len(payloads) / timed(function, repeat) for name, function in (
        ("ceiling", ceiling), ("naive_json", naive_json), ("kcp_dicts", kcp_dicts),
        ("kcp_json", kcp_json))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=2000, help="synthetic alerts (2000)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sets = {"synthetic": synthetic_payloads(args.synthetic)}
    if SHARED.is_dir():
        sets["real ZTF"] = real_payloads()
    print(f"kcp codec benchmark — Python {platform.python_version()}, fastavro "
          f"{fastavro.__version__}, {platform.machine()}, best of {args.repeat}")
    print(f"{'alerts':<10} {'n':>6} {'MB':>7} | {'ceiling/s':>9} {'naive/s':>8} | "
          f"{'kcp dict/s':>10} {'vs ceil':>7} | {'kcp json/s':>10} {'MB/s':>6} {'vs naive':>8}")
    for name, payloads in sets.items():
        rates = measure(payloads, args.repeat)
        megabytes = sum(map(len, payloads)) / 1e6
        print(f"{name:<10} {len(payloads):>6} {megabytes:>7.1f} | {rates['ceiling']:>9.0f} "
              f"{rates['naive_json']:>8.0f} | {rates['kcp_dicts']:>10.0f} "
              f"{rates['kcp_dicts'] / rates['ceiling']:>6.2f}x | {rates['kcp_json']:>10.0f} "
              f"{rates['kcp_json'] * megabytes / len(payloads):>6.1f} "
              f"{rates['kcp_json'] / rates['naive_json']:>7.2f}x")
    print("targets: kcp dict >= 0.90x ceiling; kcp json >= 2x naive", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
