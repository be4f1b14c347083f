"""Tar archives and FITS: how fast and how lean, measured with the installed kcp.

    python bench/tar_fits.py [--alerts N] [--bootstrap HOST:PORT]

On a synthetic night of N ZTF-like alerts (kcp.synth, 20 000 by default, cached in .cache/bench/):

- night.tar.gz -> JSON Lines      kcp cp night.tar.gz -          alerts/s, peak RSS
- night.tar.gz -> stdin -> JSON   kcp convert < night.tar.gz     alerts/s
- topic -> night.tar.gz           kcp cp TOPIC night.tar.gz      alerts/s, peak RSS (needs Kafka)
- night.tar.gz -> FITS members    kcp cp night.tar.gz x.tar --member-format fits   alerts/s
- FITS members -> JSON Lines      kcp cp x.tar -                 alerts/s

The topic figure uses the broker at --bootstrap (or KCP_BENCH_BOOTSTRAP), else starts one of its
own (tests/kafka/broker.py), else is skipped. Peak RSS is the process's ru_maxrss.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
KAFKA_LIBS = ROOT / ".cache" / "kafka-libs"
KCP = str(Path(sys.executable).with_name("kcp"))


def measure(args: list[str], env: dict[str, str], stdin: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one kcp run, its output thrown away."""
    started = time.perf_counter()
    with open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen([KCP, *args], stdin=source, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"kcp {' '.join(args)} failed: {process.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def night_archive(alerts: int, env: dict[str, str]) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"night-{alerts}.tar.gz"
    if not archive.exists():
        avro = CACHE / f"night-{alerts}.avro"
        if not avro.exists():
            subprocess.run([sys.executable, "-m", "kcp.synth", str(alerts), str(avro), "--seed",
                            "1"], check=True, env=env)
        subprocess.run([KCP, "cp", str(avro), str(archive), "-q"], check=True, env=env)
    return archive


def broker(bootstrap: str | None) -> tuple[str | None, Any]:
    if bootstrap:
        return bootstrap, None
    if not any(KAFKA_LIBS.glob("*.jar")):
        return None, None
    sys.path.insert(0, str(ROOT / "tests" / "kafka"))
    from broker import KafkaBroker  # tests/kafka/broker.py

    started = KafkaBroker(KAFKA_LIBS)
    started.start(timeout=120)
    return started.bootstrap, started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--bootstrap", default=os.environ.get("KCP_BENCH_BOOTSTRAP"))
    args = parser.parse_args()
    env = dict(os.environ, XDG_CONFIG_HOME=tempfile.mkdtemp(prefix="kcp-bench-config-"))
    archive = night_archive(args.alerts, env)
    size = archive.stat().st_size / 1e6
    rows = []

    def row(what: str, count: int, wall: float, rss: float | None = None) -> None:
        peak = f"{rss:,.0f} MB" if rss is not None else "-"
        rows.append((what, f"{count:,}", f"{wall:.2f} s", f"{count / wall:,.0f}/s", peak))
        print(f"bench: {what}: {count / wall:,.0f} alerts/s", file=sys.stderr, flush=True)

    wall, rss = measure(["cp", str(archive), "-", "-q"], env)
    row(f"night.tar.gz ({size:,.0f} MB) -> JSON Lines", args.alerts, wall, rss)
    wall, rss = measure(["convert", "-q"], env, stdin=archive)
    row("stdin tar.gz -> JSON Lines (convert)", args.alerts, wall, rss)

    with tempfile.TemporaryDirectory(prefix="kcp-bench-") as scratch:
        fits_tar = Path(scratch) / "night-fits.tar"
        fits_count = min(args.alerts, 1000)
        wall, rss = measure(["cp", str(archive), str(fits_tar), "--member-format", "fits",
                             "-c", str(fits_count), "-q"], env)
        row("tar.gz -> tar of FITS members", fits_count, wall, rss)
        wall, rss = measure(["cp", str(fits_tar), "-", "-q"], env)
        row("tar of FITS members -> JSON Lines", fits_count, wall, rss)

        bootstrap, started = broker(args.bootstrap)
        try:
            if bootstrap is None:
                print("bench: no Kafka broker (make kafka-libs): topic -> tar.gz skipped",
                      file=sys.stderr)
            else:
                env["KCP_BROKER"] = bootstrap
                topic = f"kcp-bench-tar-{uuid.uuid4().hex[:6]}"
                subprocess.run([KCP, "cp", str(archive), topic, "-q"], check=True, env=env)
                out = Path(scratch) / "out.tar.gz"
                wall, rss = measure(["cp", topic, str(out), "-q"], env)
                row("topic -> night.tar.gz", args.alerts, wall, rss)
        finally:
            if started is not None:
                started.stop()

    headers = ("what", "alerts", "wall", "rate", "peak RSS")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
