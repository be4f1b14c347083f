"""Rubin-shaped alerts for `make bench` (B9) and `make bench-codec`.

Made from the official Rubin alert schema lsst.v10_0 (the `lsst-alert-packet` package, else
../shared/data/lsst/alert_packet/schema), in Rubin's Confluent wire format (schema id 1000):
every field filled with random values of its type (15% of the nullable ones null), histories
of 0 to 1,000 previous sources and forced sources (evenly spread), and three raw FITS cutouts of
a 64 x 64 float32 image each (~20 kB, as Rubin sends them: FITS bytes, not gzipped).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kcp.codec import RubinSchemaTree, Schema, write_body
from kcp.codec.schemas import named_types

SCHEMA_ID = 1000  # lsst.v10_0: Rubin's registry id is major * 100 + minor
SHARED_TREE = Path(__file__).resolve().parents[2] / "shared/data/lsst/alert_packet/schema"
MAX_HISTORY = 1000
TIMESTAMPS = {"timestamp-millis": 1, "timestamp-micros": 1000}  # per millisecond
POOL = 64  # distinct history records drawn from (random values are slow to make in Python)


def rubin_schema() -> Schema | None:
    """The lsst.v10_0 alert schema, or None when neither source is at hand."""
    for tree in (RubinSchemaTree.from_package(), RubinSchemaTree(SHARED_TREE)):
        definition = tree.schema_for_id(SCHEMA_ID) if tree is not None else None
        if definition is not None:
            return Schema(definition, registry_id=SCHEMA_ID)
    return None


class _Values:
    def __init__(self, schema: Schema, rng: random.Random) -> None:
        self.named = named_types(schema.parsed)
        self.rng = rng

    def of(self, node: Any) -> Any:
        rng = self.rng
        if isinstance(node, str) and node in self.named:
            node = self.named[node]
        if isinstance(node, list):
            others = [b for b in node if b != "null"]
            if "null" in node and (not others or rng.random() < 0.15):
                return None
            return self.of(others[0])
        kind = node["type"] if isinstance(node, dict) else node
        logical = node.get("logicalType") if isinstance(node, dict) else None
        if logical in TIMESTAMPS:  # within a night of 2026-03-06
            return (1_772_800_000_000 + rng.randrange(36_000_000)) * TIMESTAMPS[logical]
        if kind in ("record", "error"):
            return {f["name"]: self.of(f["type"]) for f in node["fields"]}
        if kind == "float":
            return struct.unpack("<f", struct.pack("<f", rng.gauss(20.0, 3.0)))[0]
        if kind == "double":
            return rng.uniform(-1e3, 1e3)
        if kind == "int":
            return rng.randint(0, 100_000)
        if kind == "long":
            return rng.getrandbits(60)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "string":
            return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789_", k=12))
        if kind == "bytes":
            return rng.randbytes(16)
        if kind == "array":
            return []
        if kind == "map":
            return {}
        if kind == "enum":
            return node["symbols"][0]
        if kind == "fixed":
            return rng.randbytes(node["size"])
        if isinstance(kind, (dict, list)):
            return self.of(kind)
        return None


def fits_cutout(rng: random.Random, side: int = 64) -> bytes:
    """A FITS file of one side x side float32 image: a header block and the padded data."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32",
             "NAXIS   =                    2", f"NAXIS1  = {side:>20}", f"NAXIS2  = {side:>20}",
             "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    data = struct.pack(f">{side * side}f", *(rng.gauss(0.0, 1.0) for _ in range(side * side)))
    return header + data + b"\0" * (-len(data) % 2880)


def rubin_alerts(schema: Schema, n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    values = _Values(schema, rng)
    fields = {f["name"]: f["type"] for f in schema.parsed["fields"]}
    source = fields["prvDiaSources"][1]["items"]
    forced = fields["prvDiaForcedSources"][1]["items"]
    sources = [values.of(source) for _ in range(POOL)]
    forced_sources = [values.of(forced) for _ in range(POOL)]
    for i in range(n):
        alert = values.of(schema.parsed)
        history = MAX_HISTORY * (i % 11) // 10  # 0, 100, ..., 1,000
        alert["prvDiaSources"] = rng.choices(sources, k=history)
        alert["prvDiaForcedSources"] = rng.choices(forced_sources, k=history)
        for name in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
            alert[name] = fits_cutout(rng)
        yield alert


def rubin_payloads(n: int, seed: int = 1) -> list[bytes]:
    """n Rubin-shaped alerts in Rubin's wire format; empty without the schema."""
    schema = rubin_schema()
    if schema is None:
        return []
    header = b"\x00" + struct.pack(">I", SCHEMA_ID)
    return [header + write_body(alert, schema) for alert in rubin_alerts(schema, n, seed)]
