"""make bench-codec: kcp's Avro core against the ceiling and the loop a user would write.

Measured in one run on the same alert payloads (one OCF per message, as ZTF sends them): the real
ZTF alerts of ../shared/data when present, else (and also) kcp's synthetic ones.

- ceiling: fastavro.schemaless_reader on the bodies alone, the schema parsed beforehand;
- naive:   fastavro.reader(BytesIO(payload)) per message, + json.dumps (bytes as base64);
- kcp:     kcp's decode of the same OCF payloads, to dicts and to JSON Lines;
- native:  kcp's native transcoder (kcp.codec.native) on the same payloads, to JSON Lines.

A second table gives the native transcoder's speed in MB of Avro per second, on ZTF alerts and
on Rubin-shaped ones (bench/rubin.py), next to this machine's memory-copy speed on the same
bytes: the physical limit of anything that reads them.
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
from typing import Any

import fastavro

from kcp.codec import AvroToJson, SchemaStore, decode_payload, native
from kcp.codec.framing import DatumReader, iter_ocf_blocks, parse_ocf_header
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
    # the ceiling gets bodies and parsed schemas for free
    bodies = [(body, schema.parsed) for body, schema in ocf_bodies(payloads)]

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

    transcoder = native.NativeJson("base64", DatumReader(kcp_store), kcp_store.limits)

    def native_json() -> None:
        for payload in payloads:
            decode_payload(payload, kcp_store, None, transcoder)

    functions = [("ceiling", ceiling), ("naive_json", naive_json), ("kcp_dicts", kcp_dicts),
                 ("kcp_json", kcp_json)]
    if native.BUILT:
        functions.append(("native_json", native_json))
    return {name: len(payloads) / timed(function, repeat) for name, function in functions}


def transcode_speed(bodies: list[tuple[bytes, Any]], repeat: int) -> tuple[float, float]:
    """(MB/s of Avro transcoded natively, MB/s of a memory copy of the same bytes)."""
    megabytes = sum(len(body) for body, _ in bodies) / 1e6
    transcoder = native.NativeJson("base64", DatumReader(SchemaStore()), Limits())
    programs = [(body, transcoder.program(schema)) for body, schema in bodies]

    def transcode() -> None:
        for body, program in programs:
            program.transcode(body, 1)

    joined = b"".join(body for body, _ in bodies)
    return (megabytes / timed(transcode, repeat),
            megabytes / timed(lambda: bytearray(joined), max(repeat, 5)))


def ocf_bodies(payloads: list[bytes]) -> list[tuple[bytes, Any]]:
    store = SchemaStore()
    bodies = []
    for payload in payloads:
        schema, codec, sync, pos = parse_ocf_header(payload, store)
        blocks = iter_ocf_blocks(payload, codec, sync, pos, Limits())
        bodies += [(block, schema) for _, block in blocks]
    return bodies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=2000, help="synthetic alerts (2000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rubin", type=int, default=44, help="Rubin-shaped alerts (44)")
    args = parser.parse_args()
    sets = {"synthetic": synthetic_payloads(args.synthetic)}
    if SHARED.is_dir():
        sets["real ZTF"] = real_payloads()
    print(f"kcp codec benchmark — Python {platform.python_version()}, fastavro "
          f"{fastavro.__version__}, {platform.machine()}, best of {args.repeat}")
    print(f"{'alerts':<10} {'n':>6} {'MB':>7} | {'ceiling/s':>9} {'naive/s':>8} | "
          f"{'kcp dict/s':>10} {'vs ceil':>7} | {'kcp json/s':>10} {'MB/s':>6} {'vs naive':>8} | "
          f"{'native/s':>8} {'vs ceil':>7}")
    for name, payloads in sets.items():
        rates = measure(payloads, args.repeat)
        megabytes = sum(map(len, payloads)) / 1e6
        print(f"{name:<10} {len(payloads):>6} {megabytes:>7.1f} | {rates['ceiling']:>9.0f} "
              f"{rates['naive_json']:>8.0f} | {rates['kcp_dicts']:>10.0f} "
              f"{rates['kcp_dicts'] / rates['ceiling']:>6.2f}x | {rates['kcp_json']:>10.0f} "
              f"{rates['kcp_json'] * megabytes / len(payloads):>6.1f} "
              f"{rates['kcp_json'] / rates['naive_json']:>7.2f}x | "
              f"{rates.get('native_json', 0):>8.0f} "
              f"{rates.get('native_json', 0) / rates['ceiling']:>6.2f}x")
    print("targets: kcp dict >= 0.90x ceiling; kcp json >= 2x naive", file=sys.stderr)
    if not native.BUILT:
        print("the native transcoder is not built (no cargo): no native figures")
        return 0
    from rubin import rubin_payloads, rubin_schema  # bench/rubin.py

    speeds = {name: ocf_bodies(payloads) for name, payloads in sets.items()}
    schema = rubin_schema()
    if schema is not None:
        speeds["Rubin v10"] = [(p[5:], schema) for p in rubin_payloads(args.rubin)]
    print(f"\n{'alerts':<10} {'n':>6} {'MB':>7} | {'native MB/s':>11} {'memcpy MB/s':>11} "
          f"{'share':>6}")
    for name, bodies in speeds.items():
        transcoded, copied = transcode_speed(bodies, args.repeat)
        megabytes = sum(len(b) for b, _ in bodies) / 1e6
        print(f"{name:<10} {len(bodies):>6} {megabytes:>7.1f} | {transcoded:>11,.0f} "
              f"{copied:>11,.0f} {transcoded / copied:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
