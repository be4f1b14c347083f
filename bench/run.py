"""make bench: kcp against its peers on a real Kafka broker, every figure measured in one run.

    python bench/run.py [--alerts N] [--bootstrap HOST:PORT] [--only B1,B2,...]

Starts its own single-node broker on free ports (tests/kafka/broker.py), unless something answers
on --bootstrap or KCP_BENCH_BOOTSTRAP; loads N synthetic ZTF-like alerts (kcp.synth, cached in
.cache/bench/) plus, once, the real ZTF alerts of ../shared/data/ztf when present; then measures

  B1 raw consume to /dev/null           kcp consume --raw          vs kcat -C -e
  B2 consume and decode to JSON Lines   kcp consume (and -j 2)     vs bench/user_loop.py, and vs
                                                                      the decode-only ceiling
  B3 topic -> topic passthrough copy    kcp cp                     vs B1's raw consume rate
  B4 produce a night from files         kcp produce night.avro     vs kcat -P one file per alert
  B5 -j N parallel decoding speed-up    kcp consume -j 1           vs -j N (N = cores), on B2's
                                                                      alerts (one partition) and
                                                                      on B10's (N partitions)
  B6 peak RSS consuming 5 x N alerts    kcp consume, RSS sampled every 0.2 s
  B7 produce -> stdout latency          kcp tail                   vs kcat -C -o end -u
  B8 bytes per alert on the broker      framing x compression      vs ZTF's OCF, uncompressed
  B9 copy between two clusters          kcp cp -g --exactly-once   vs kcp cp -g (at least once)
  B10 Rubin-shaped alerts to JSON Lines kcp consume (native codec,  vs the decode-only ceiling, and
                                        and python codec)            vs bench/user_loop.py

and prints one table (also written to bench/results.json with the machine and the versions).
Each figure is the best of a few runs; the count is in the table ("n").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
KAFKA_LIBS = ROOT / ".cache" / "kafka-libs"
SHARED_ZTF = ROOT.parent / "shared" / "data" / "ztf"
SCHEMA = ROOT / "schemas" / "ztf" / "alert.avsc"
RESULTS = ROOT / "bench" / "results.json"
SEED = 1
CORES = os.cpu_count() or 1
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]  # others busy on the box?

# Best of how many runs, per figure: small, the whole bench must fit in 10 minutes on 2 cores.
REPEAT = {"B1": 5, "B2": 2, "B3": 2, "B4": 2, "B5": 2, "B6": 1, "B7": 1, "B8": 1, "B9": 2, "B10": 2}
RSS_COPIES = 5          # B6 consumes the night this many times over
LATENCY_MESSAGES = 1000  # B7
LATENCY_RATE = 200       # B7, messages per second
B8_SAMPLE = 1000         # alerts per framing x compression
RUBIN_ALERTS = 220       # B10: histories of 0 to 1,000 sources, 20 of each length
B5_COPIES = 10           # B5 reads B10's alerts 10 times over (660 MB of Avro): decoding dominates
ZTF_NIGHT = 1_000_000    # alerts, for the B8 savings


# -- the table ----------------------------------------------------------------------------------
@dataclass
class Row:
    figure: str
    what: str
    kcp: str
    peer: str
    ratio: float | None
    target: str
    ok: bool | None          # None: informative, or skipped
    repeat: int = 1
    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return {True: "pass", False: "FAIL", None: "-"}[self.ok]


def check(value: float | None, target: str) -> bool | None:
    """'<= 1.3', '>= 3', '< 50 ms', ... against value."""
    if value is None:
        return None
    match = re.match(r"([<>]=?)\s*([\d.]+)", target)
    if match is None:
        return None
    op, limit = match.group(1), float(match.group(2))
    return {"<": value < limit, "<=": value <= limit, ">": value > limit,
            ">=": value >= limit}[op]


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    headers = ("figure", "kcp", "peer", "ratio", "target", "result", "n")
    cells = [(f"{r.figure} {r.what}", r.kcp, r.peer,
              "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target, r.result, str(r.repeat))
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line, file=out)
    print("-" * len(line), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip(), file=out)
    notes = [f"  {r.figure} {r.what}: {r.note}" for r in rows if r.note]
    if notes:
        print("notes:", *notes, sep="\n", file=out)


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def rate_text(count: int, wall: float) -> str:
    return f"{seconds(wall)} ({count / wall:,.0f}/s)"


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- running commands ---------------------------------------------------------------------------
@dataclass
class Run:
    wall: float
    cpu: float
    maxrss_mb: float
    status: int
    stderr: str
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB) samples


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants (workers of -j), from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo += [int(c) for c in children.read().split()]
    return total


def run(cmd: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL,
        sample_rss: bool = False) -> Run:
    """Run cmd to the end; wall time, CPU time (user + sys, children included), peak RSS."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                kb = tree_rss_kb(proc.pid)
                if kb:
                    samples.append((time.perf_counter() - started, kb / 1024))
                stop.wait(0.2)

        thread = threading.Thread(target=sampler, daemon=True)
        if sample_rss:
            thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        if sample_rss:
            thread.join()
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
               text, samples)


def best(runs: list[Run], what: str) -> Run:
    for r in runs:
        if r.status != 0:
            raise RuntimeError(f"{what} exited {r.status}: {r.stderr.strip()[-2000:]}")
    return min(runs, key=lambda r: r.wall)


def repeat(times: int, function: Callable[[int], Run], what: str) -> tuple[Run, list[float]]:
    runs = [function(i) for i in range(times)]
    return best(runs, what), [round(r.wall, 3) for r in runs]


def alternate(times: int, contenders: dict[str, Callable[[int], Run]]
              ) -> dict[str, tuple[Run, list[float]]]:
    """Best of `times` runs of each contender, taking turns (a, b, b, a, ...) so that a busy
    moment of a shared machine, or the broker's log flushing, does not fall on one side only."""
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(times):
        for name in names if i % 2 == 0 else reversed(names):
            runs[name].append(contenders[name](i))
    return {name: (best(done, name), [round(r.wall, 3) for r in done])
            for name, done in runs.items()}


def runs_text(walls: list[float]) -> str:
    return " ".join(f"{w:.1f}" for w in walls) + " s"


# -- the broker ---------------------------------------------------------------------------------
def answers(bootstrap: str, timeout: float = 5.0) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except confluent_kafka.KafkaException:
        return False


def start_broker() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "kafka"))
    from broker import KafkaBroker  # tests/kafka/broker.py

    broker = KafkaBroker(KAFKA_LIBS)
    broker.start(timeout=120)
    return broker


class Kafka:
    """Topics of this run: created empty before each measurement, deleted at the end."""

    def __init__(self, bootstrap: str, log_dir: Path | None) -> None:
        self.bootstrap = bootstrap
        self.log_dir = log_dir
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.prefix = f"kcp-bench-{uuid.uuid4().hex[:6]}-"
        self.created: list[str] = []

    def topic(self, name: str, partitions: int = 1) -> str:
        topic = self.prefix + name
        future = self.admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic]
        future.result(timeout=30)
        self.created.append(topic)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the leader must be known before we time anything
            metadata = self.admin.list_topics(topic, timeout=10).topics.get(topic)
            if metadata and metadata.error is None and all(
                    p.leader >= 0 for p in metadata.partitions.values()):
                return topic
            time.sleep(0.05)
        raise RuntimeError(f"topic {topic} has no leader")

    def delete(self, *topics: str) -> None:
        topics = tuple(t for t in topics if t in self.created)
        if topics:
            for future in self.admin.delete_topics(list(topics)).values():
                with contextlib.suppress(Exception):
                    future.result(timeout=30)
            self.created = [t for t in self.created if t not in topics]

    def count(self, topic: str) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "kcp-bench"})
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        finally:
            consumer.close()
        return high - low

    def payloads(self, topic: str, count: int) -> list[bytes]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "kcp-bench",
                             "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        try:
            while len(values) < count:
                for message in consumer.consume(500, 1.0):
                    if message.error() is None:
                        values.append(message.value())
        finally:
            consumer.close()
        return values

    def produce(self, topic: str, payloads: list[bytes], partitions: int = 1) -> None:
        """``payloads`` into ``topic``, dealt round-robin over its first ``partitions``."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20,
                             "queue.buffering.max.kbytes": 262144})
        for i, value in enumerate(payloads):
            while True:
                try:
                    producer.produce(topic, value, partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        if producer.flush(120):
            raise RuntimeError(f"{topic}: messages left undelivered")

    def log_bytes(self, topic: str) -> int | None:
        if self.log_dir is None:
            return None
        return sum(p.stat().st_size for p in (self.log_dir / f"{topic}-0").glob("*.log"))


# -- the alerts ---------------------------------------------------------------------------------
def night_file(n: int) -> Path:
    """N synthetic alerts in one OCF, generated once (about 450 alerts/s) and cached."""
    from kcp.synth import write_night

    path = CACHE / f"night-{n}-seed{SEED}.avro"
    if not path.exists():
        say(f"generating {n:,} synthetic alerts into {path} (once; ~{n / 450:.0f} s)")
        CACHE.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".avro.tmp")
        write_night(part, n, seed=SEED)
        part.rename(path)
    return path


def real_alert_files() -> tuple[list[Path], int]:
    """The real ZTF alert files that read cleanly (PROVENANCE.md lists some corrupt ones)."""
    good, records = [], 0
    for path in sorted(SHARED_ZTF.rglob("*.avro")) if SHARED_ZTF.is_dir() else []:
        try:
            with open(path, "rb") as stream:
                count = sum(1 for _ in fastavro.reader(stream))
        except Exception:
            continue
        if count:
            good.append(path)
            records += count
    return good, records


def alert_files(n: int, payloads: list[bytes]) -> list[Path]:
    """The first n alerts of the topic (single-record OCFs, as kcp sent them) as one file each."""
    folder = CACHE / "files" / f"{n}-seed{SEED}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i, value in enumerate(payloads[:n]):
            (folder / f"{i:07d}.avro").write_bytes(value)
        done.touch()
    return sorted(folder.glob("*.avro"))


# The ceiling decodes bodies, so the OCF envelope is taken apart here, beforehand.
def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def ocf_bodies(payload: bytes, schemas: dict[bytes, Any]) -> list[tuple[bytes, int, Any]]:
    """(block, record count, parsed schema) for each block of one OCF payload."""
    if payload[:4] != b"Obj\x01":
        raise ValueError("not an Avro OCF payload")
    pos, meta = 4, {}
    while True:
        count, pos = _read_long(payload, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _read_long(payload, pos)
        for _ in range(count):
            size, pos = _read_long(payload, pos)
            key = payload[pos:pos + size].decode()
            pos += size
            size, pos = _read_long(payload, pos)
            meta[key] = payload[pos:pos + size]
            pos += size
    sync, pos = payload[pos:pos + 16], pos + 16
    text = meta["avro.schema"]
    if text not in schemas:
        schemas[text] = fastavro.parse_schema(json.loads(text))
    codec = meta.get("avro.codec", b"null")
    blocks = []
    while pos < len(payload):
        count, pos = _read_long(payload, pos)
        size, pos = _read_long(payload, pos)
        block = payload[pos:pos + size]
        pos += size + 16
        if codec == b"deflate":
            block = zlib.decompress(block, -15)
        elif codec != b"null":
            raise ValueError(f"codec {codec!r}")
        blocks.append((block, count, schemas[text]))
    assert not sync or payload.endswith(sync)
    return blocks


# -- the figures --------------------------------------------------------------------------------
class Bench:
    def __init__(self, kafka: Kafka, topic: str, records: int, megabytes: float,
                 payloads: list[bytes], files: list[Path], night: Path, env: dict[str, str],
                 kcat: str | None, jobs: bool) -> None:
        self.kafka = kafka
        self.topic = topic
        self.records = records
        self.megabytes = megabytes
        self.payloads = payloads
        self.files = files
        self.night = night
        self.env = env
        self.kcat = kcat
        self.jobs = jobs
        self.kcp = kcp_executable()
        self.rows: list[Row] = []
        self.raw_rate: float | None = None
        self.kcat_produce_rate: float | None = None
        self.cp_rate: float | None = None

    def add(self, row: Row) -> None:
        if row.ok is None and row.ratio is not None and row.target[:1] in "<>":
            row.ok = check(round(row.ratio, 2), row.target)  # as the table shows it
        self.rows.append(row)
        say(f"{row.figure} {row.what}: kcp {row.kcp}, peer {row.peer}, {row.result}")

    def skipped(self, figure: str, what: str, why: str) -> None:
        self.add(Row(figure, what, "skipped", "-", None, "-", None, 0, why))

    # B1 -------------------------------------------------------------------------------------
    def b1(self) -> None:
        times = REPEAT["B1"]
        contenders = {"kcp": lambda _: run([self.kcp, "consume", self.topic, "--raw"], self.env)}
        if self.kcat:
            contenders["kcat"] = lambda _: run(
                [self.kcat, "-C", "-b", self.kafka.bootstrap, "-t", self.topic, "-e", "-q"],
                self.env)
        results = alternate(times, contenders)
        kcp, kcp_walls = results["kcp"]
        self.raw_rate = self.records / kcp.wall
        values = {"kcp_s": kcp.wall, "kcp_runs": kcp_walls, "kcp_cpu_s": kcp.cpu,
                  "kcp_mb_per_s": self.megabytes / kcp.wall}
        if not self.kcat:
            self.add(Row("B1", "raw consume > /dev/null", rate_text(self.records, kcp.wall),
                         "kcat missing", None, "<= 1.3", None, times, "install kcat", values))
            return
        kcat, kcat_walls = results["kcat"]
        values.update(kcat_s=kcat.wall, kcat_runs=kcat_walls, kcat_cpu_s=kcat.cpu)
        self.add(Row("B1", "raw consume > /dev/null (time)", rate_text(self.records, kcp.wall),
                     f"kcat {rate_text(self.records, kcat.wall)}", kcp.wall / kcat.wall,
                     "<= 1.3", None, times,
                     f"{self.megabytes / kcp.wall:,.0f} MB/s; runs kcp {runs_text(kcp_walls)}, "
                     f"kcat {runs_text(kcat_walls)}; CPU kcp {kcp.cpu:.2f} s, "
                     f"kcat {kcat.cpu:.2f} s",
                     values))

    # B2 and B5 ------------------------------------------------------------------------------
    def ceiling(self) -> float:
        """Alerts/s of fastavro.schemaless_reader alone: bodies and parsed schemas pre-loaded."""
        schemas: dict[bytes, Any] = {}
        bodies = [b for p in self.payloads for b in ocf_bodies(p, schemas)]
        reader = fastavro.schemaless_reader
        walls = []
        for _ in range(REPEAT["B2"]):
            started = time.perf_counter()
            for block, count, parsed in bodies:
                stream = io.BytesIO(block)
                for _ in range(count):
                    reader(stream, parsed, None)
            walls.append(time.perf_counter() - started)
        return sum(c for _, c, _ in bodies) / min(walls)

    def b2_b5(self) -> None:
        times = REPEAT["B2"]
        consume = [self.kcp, "consume", self.topic]
        contenders = {
            "kcp": lambda _: run(consume, self.env),
            "user loop": lambda _: run([sys.executable, str(ROOT / "bench" / "user_loop.py"),
                                        self.kafka.bootstrap, self.topic], self.env),
        }
        if self.jobs:
            contenders[f"-j {CORES}"] = lambda _: run([*consume, "-j", str(CORES)], self.env)
            contenders["-j 1"] = lambda _: run([*consume, "-j", "1"], self.env)
        results = alternate(times, contenders)
        (kcp, kcp_walls), (user, user_walls) = results["kcp"], results["user loop"]
        ceiling = self.ceiling()
        kcp_rate = self.records / kcp.wall
        values = {"kcp_s": kcp.wall, "kcp_runs": kcp_walls, "kcp_cpu_s": kcp.cpu,
                  "user_loop_s": user.wall, "user_loop_runs": user_walls,
                  "user_loop_cpu_s": user.cpu, "ceiling_per_s": ceiling}
        self.add(Row("B2", "consume -> JSON Lines vs user loop (speed-up)",
                     rate_text(self.records, kcp.wall),
                     f"user loop {rate_text(self.records, user.wall)}", user.wall / kcp.wall,
                     ">= 3", None, times,
                     f"runs kcp {runs_text(kcp_walls)}, user loop {runs_text(user_walls)}; "
                     f"CPU kcp {kcp.cpu:.1f} s, user loop {user.cpu:.1f} s", values))
        self.add(Row("B2", "consume -> JSON Lines vs decode-only ceiling (rate)",
                     f"{kcp_rate:,.0f}/s", f"ceiling {ceiling:,.0f}/s", kcp_rate / ceiling,
                     ">= 2", None, times,
                     "ceiling: fastavro.schemaless_reader on pre-loaded bodies, in-process",
                     {"kcp_per_s": kcp_rate, "ceiling_per_s": ceiling}))
        if not self.jobs:
            self.skipped("B2", "consume -j 2 -> JSON Lines", "kcp consume has no -j yet")
            self.skipped("B5", f"-j {CORES} speed-up", "kcp consume has no -j yet")
            return
        (jn, jn_walls), (j1, j1_walls) = results[f"-j {CORES}"], results["-j 1"]
        jn_rate = self.records / jn.wall
        self.add(Row("B2", f"consume -j {CORES} -> JSON Lines vs user loop (speed-up)",
                     rate_text(self.records, jn.wall),
                     f"user loop {rate_text(self.records, user.wall)}", user.wall / jn.wall,
                     ">= 3", None, times,
                     f"runs {runs_text(jn_walls)}; CPU {jn.cpu:.1f} s (workers included)",
                     {"kcp_s": jn.wall, "kcp_runs": jn_walls, "kcp_cpu_s": jn.cpu}))
        self.add(Row("B2", f"consume -j {CORES} -> JSON Lines vs ceiling (rate)",
                     f"{jn_rate:,.0f}/s", f"ceiling {ceiling:,.0f}/s", jn_rate / ceiling,
                     ">= 2", None, times, "", {"kcp_per_s": jn_rate}))
        # One partition is read by one process: the target is for the Rubin row (b5_rubin).
        self.add(Row("B5", f"ZTF on one partition -j {CORES} (time -j 1 / time -j {CORES})",
                     f"-j {CORES} {seconds(jn.wall)}", f"-j 1 {seconds(j1.wall)}",
                     j1.wall / jn.wall, "-", None, times,
                     f"B2's topic has one partition, so one consumer process reads it; runs "
                     f"-j 1 {runs_text(j1_walls)}",
                     {"j1_s": j1.wall, "j1_runs": j1_walls, "j1_cpu_s": j1.cpu, "jn_s": jn.wall,
                      "n": CORES}))

    # B10 ------------------------------------------------------------------------------------
    def b10(self) -> None:
        from rubin import rubin_payloads, rubin_schema  # bench/rubin.py

        schema = rubin_schema()
        if schema is None:
            self.skipped("B10", "Rubin alerts -> JSON Lines",
                         "no Rubin schema: install lsst-alert-packet (pip install kcp[rubin])")
            return
        payloads = rubin_payloads(RUBIN_ALERTS)
        megabytes = sum(map(len, payloads)) / 1e6
        topic = self.kafka.topic("rubin")
        self.kafka.produce(topic, payloads)
        schema_file = CACHE / "lsst.v10_0.alert.json"  # what the user loop reads its schema from
        schema_file.write_text(json.dumps(schema.definition))
        consume = [self.kcp, "consume", topic]
        results = alternate(REPEAT["B10"], {
            "kcp": lambda _: run(consume, self.env),
            "python codec": lambda _: run(consume, {**self.env, "KCP_NATIVE": "0"}),
            "user loop": lambda _: run([sys.executable, str(ROOT / "bench" / "user_loop.py"),
                                        self.kafka.bootstrap, topic, str(schema_file)], self.env),
        })
        self.kafka.delete(topic)
        if self.jobs:
            self.b5_rubin(payloads)
        (kcp, kcp_walls), (python, python_walls), (user, user_walls) = (
            results["kcp"], results["python codec"], results["user loop"])
        bodies = [payload[5:] for payload in payloads]
        walls = []
        for _ in range(REPEAT["B10"]):
            started = time.perf_counter()
            for body in bodies:
                fastavro.schemaless_reader(io.BytesIO(body), schema.parsed, None)
            walls.append(time.perf_counter() - started)
        ceiling = len(bodies) / min(walls)
        n = len(payloads)
        values = {"alerts": n, "megabytes": megabytes, "kcp_s": kcp.wall, "kcp_runs": kcp_walls,
                  "kcp_cpu_s": kcp.cpu, "python_codec_s": python.wall,
                  "python_codec_runs": python_walls, "user_loop_s": user.wall,
                  "user_loop_runs": user_walls, "ceiling_per_s": ceiling}
        what = f"{n} Rubin v10 alerts ({megabytes / n * 1e3:.0f} kB avg, 0-1,000 sources)"
        self.add(Row("B10", "Rubin -> JSON Lines vs decode-only ceiling (rate)",
                     f"{n / kcp.wall:,.0f}/s ({megabytes / kcp.wall:,.0f} MB/s)",
                     f"ceiling {ceiling:,.0f}/s", n / kcp.wall / ceiling, ">= 5", None,
                     REPEAT["B10"], f"{what}; runs kcp {runs_text(kcp_walls)}; CPU "
                     f"{kcp.cpu:.1f} s; ceiling: fastavro.schemaless_reader in-process", values))
        self.add(Row("B10", "Rubin -> JSON Lines vs user loop (speed-up)",
                     rate_text(n, kcp.wall), f"user loop {rate_text(n, user.wall)}",
                     user.wall / kcp.wall, "-", None, REPEAT["B10"],
                     f"runs user loop {runs_text(user_walls)}"))
        self.add(Row("B10", "Rubin -> JSON Lines, python codec (KCP_NATIVE=0) vs ceiling",
                     rate_text(n, python.wall), f"ceiling {ceiling:,.0f}/s",
                     n / python.wall / ceiling, "-", None, REPEAT["B10"],
                     f"runs {runs_text(python_walls)}; the path --where, --map, --reader-schema "
                     "take"))

    def b5_rubin(self, payloads: list[bytes]) -> None:
        """B5 where the work is decoding (B10's Rubin alerts), on a topic of CORES partitions:
        -j N is N consumer processes of one group, each owning its share of the partitions."""
        topic = self.kafka.topic("rubin-spread", partitions=CORES)
        # B10's alerts B5_COPIES times over: decoding, not starting up, is what is timed
        payloads = payloads * B5_COPIES
        self.kafka.produce(topic, payloads, partitions=CORES)
        consume = [self.kcp, "consume", topic]
        results = alternate(REPEAT["B5"], {
            "-j 1": lambda _: run([*consume, "-j", "1"], self.env),
            f"-j {CORES}": lambda _: run([*consume, "-j", str(CORES)], self.env),
        })
        self.kafka.delete(topic)
        (j1, j1_walls), (jn, jn_walls) = results["-j 1"], results[f"-j {CORES}"]
        n = len(payloads)
        # The broker, the parent process and the children share the cores: what -j N leaves
        # to the broker (and to everything else on the box) is cores x wall - kcp's CPU.
        self.add(Row("B5", f"Rubin -j {CORES} speed-up (time -j 1 / time -j {CORES})",
                     f"-j {CORES} {rate_text(n, jn.wall)}", f"-j 1 {rate_text(n, j1.wall)}",
                     j1.wall / jn.wall, f">= {0.8 * CORES:g}", None, REPEAT["B5"],
                     f"{n} alerts on {CORES} partitions, {CORES} cores shared with the broker; "
                     f"runs -j 1 {runs_text(j1_walls)}, -j {CORES} {runs_text(jn_walls)}; CPU "
                     f"-j 1 {j1.cpu:.1f} s, -j {CORES} {jn.cpu:.1f} s of "
                     f"{CORES * jn.wall:.1f} s available",
                     {"alerts": n, "j1_s": j1.wall, "j1_runs": j1_walls, "j1_cpu_s": j1.cpu,
                      "jn_s": jn.wall, "jn_runs": jn_walls, "jn_cpu_s": jn.cpu, "n": CORES}))

    # B3 -------------------------------------------------------------------------------------
    def b3(self) -> None:
        times = REPEAT["B3"]
        copies: list[str] = []

        def copy(i: int) -> Run:
            destination = self.kafka.topic(f"copy-{i}")
            copies.append(destination)
            return run([self.kcp, "cp", self.topic, destination], self.env)

        kcp, walls = repeat(times, copy, "kcp cp")
        copied = [self.kafka.count(t) for t in copies]
        self.kafka.delete(*copies)
        if any(c != self.records for c in copied):
            raise RuntimeError(f"kcp cp copied {copied} records, not {self.records}")
        rate = self.records / kcp.wall
        self.cp_rate = rate
        note = "peer: B1's kcp consume --raw rate"
        self.add(Row("B3", "topic -> topic copy (rate vs raw consume)",
                     f"{rate:,.0f}/s ({seconds(kcp.wall)})",
                     f"raw consume {self.raw_rate:,.0f}/s" if self.raw_rate else "-",
                     rate / self.raw_rate if self.raw_rate else None, ">= 0.8", None, times,
                     note, {"kcp_s": kcp.wall, "kcp_runs": walls, "kcp_cpu_s": kcp.cpu,
                            "kcp_per_s": rate}))

    # B9 -------------------------------------------------------------------------------------
    def b9(self) -> None:
        """The night copied to a second broker (a cluster of its own), in transactions with the
        source positions kept in the destination, against the same copy at least once."""
        times = REPEAT["B9"]
        other = start_broker()
        try:
            destination = Kafka(other.bootstrap, None)
            source = f"{self.kafka.bootstrap}:{self.topic}"

            def copier(exactly_once: bool) -> Callable[[int], Run]:
                def copy(i: int) -> Run:
                    name = f"{'eos' if exactly_once else 'alo'}-{i}"
                    target = destination.topic(name)
                    done = run([self.kcp, "cp", "-g", f"bench-{uuid.uuid4().hex[:6]}", source,
                                f"{other.bootstrap}:{target}",
                                *(["--exactly-once"] if exactly_once else [])], self.env)
                    copied = destination.count(target)
                    # Transactions add one commit marker per transaction to the offsets.
                    if not self.records <= copied <= self.records * 1.01:
                        raise RuntimeError(f"{name}: {copied} offsets for {self.records} alerts")
                    return done
                return copy

            results = alternate(times, {"eos": copier(True), "alo": copier(False)})
            destination.admin = None  # gone before its broker, or librdkafka logs the loss
        finally:
            other.stop()
        (eos, eos_walls), (alo, alo_walls) = results["eos"], results["alo"]
        self.add(Row("B9", "copy between clusters: --exactly-once vs at least once (rate)",
                     f"{self.records / eos.wall:,.0f}/s ({seconds(eos.wall)})",
                     f"{self.records / alo.wall:,.0f}/s ({seconds(alo.wall)})",
                     alo.wall / eos.wall, ">= 0.7", None, times,
                     f"two single-node brokers; runs eos {runs_text(eos_walls)}, "
                     f"at least once {runs_text(alo_walls)}",
                     {"eos_s": eos.wall, "eos_runs": eos_walls, "alo_s": alo.wall,
                      "alo_runs": alo_walls}))

    # B4 -------------------------------------------------------------------------------------
    def b4(self) -> None:
        times = REPEAT["B4"]
        n = len(self.files)
        made: list[str] = []
        listing = CACHE / "files" / f"list-{n}.txt"
        listing.write_text("".join(f"{p}\n" for p in self.files))

        def kcp_produce(i: int) -> Run:
            topic = self.kafka.topic(f"produce-kcp-{i}")
            made.append(topic)
            return run([self.kcp, "produce", topic, str(self.night)], self.env)

        def kcat_produce(i: int) -> Run:
            topic = self.kafka.topic(f"produce-kcat-{i}")
            made.append(topic)
            # One message per file; xargs keeps each command line under ARG_MAX.
            script = (f"xargs -d '\\n' -n 2000 {self.kcat} -P -b {self.kafka.bootstrap} "
                      f"-t {topic} < {listing}")
            return run(["bash", "-c", script], self.env)

        contenders = {"kcp": kcp_produce}
        if self.kcat:
            contenders["kcat"] = kcat_produce
        try:
            results = alternate(times, contenders)
            counts = {t: self.kafka.count(t) for t in made}
        finally:
            self.kafka.delete(*made)
        if any(c != n for c in counts.values()):
            raise RuntimeError(f"B4 topics hold {counts} messages, not {n}")
        kcp, kcp_walls = results["kcp"]
        values = {"kcp_s": kcp.wall, "kcp_runs": kcp_walls, "kcp_cpu_s": kcp.cpu, "alerts": n}
        if not self.kcat:
            self.add(Row("B4", "produce a night from files", rate_text(n, kcp.wall),
                         "kcat missing", None, "<= 1.3", None, times, "install kcat", values))
            return
        kcat, kcat_walls = results["kcat"]
        self.kcat_produce_rate = n / kcat.wall
        values.update(kcat_s=kcat.wall, kcat_runs=kcat_walls, kcat_cpu_s=kcat.cpu)
        if self.cp_rate:
            self.add(Row("B3", "topic -> topic copy (rate vs the broker's kcat -P intake)",
                         f"{self.cp_rate:,.0f}/s", f"kcat -P {self.kcat_produce_rate:,.0f}/s",
                         self.cp_rate / self.kcat_produce_rate, "-", None, REPEAT["B3"],
                         "informative: a copy cannot outrun what the broker accepts", {}))
        self.add(Row("B4", "produce a night from files (time)", rate_text(n, kcp.wall),
                     f"kcat {rate_text(n, kcat.wall)}", kcp.wall / kcat.wall, "<= 1.3", None,
                     times, f"kcp: one OCF file of {n:,} alerts; kcat: {n:,} single-alert files "
                     f"(synthetic only); runs kcp {runs_text(kcp_walls)}, kcat "
                     f"{runs_text(kcat_walls)}; CPU kcp {kcp.cpu:.1f} s, kcat {kcat.cpu:.1f} s",
                     values))

    # B6 -------------------------------------------------------------------------------------
    def b6(self) -> None:
        copies = RSS_COPIES
        need = copies * self.megabytes * 1e6 * 1.2
        free = shutil.disk_usage(self.kafka.log_dir).free if self.kafka.log_dir else None
        note = ""
        if free is None:
            copies, note = 1, "external broker: measured on the loaded topic only"
        elif free < need:
            copies = 1
            note = (f"only {free / 1e9:.1f} GB free for the broker's log, {need / 1e9:.1f} GB "
                    f"needed: measured on {self.records:,} alerts only")
        topic = self.topic
        if copies > 1:
            topic = self.kafka.topic("rss")
            for _ in range(copies):
                self.kafka.produce(topic, self.payloads)
        records = copies * self.records
        result = best([run([self.kcp, "consume", topic], self.env, sample_rss=True)],
                      "kcp consume (B6)")
        if topic != self.topic:
            self.kafka.delete(topic)
        # Sampled, not ru_maxrss: a child forked from this process (which holds every payload)
        # inherits its high-water mark until exec.
        samples = result.rss or [(result.wall, result.maxrss_mb)]
        peak = max(mb for _, mb in samples)
        quarter = [mb for t, mb in samples if t >= result.wall / 4]
        at_quarter = quarter[0] if quarter else samples[-1][1]
        growth = max(quarter or [at_quarter]) - at_quarter
        values = {"alerts": records, "peak_mb": peak, "rss_at_25pct_mb": at_quarter,
                  "growth_25_to_100pct_mb": growth, "seconds": result.wall,
                  "samples": [(round(t, 2), round(mb, 1)) for t, mb in samples]}
        self.add(Row("B6", f"peak RSS consuming {records:,} alerts to JSON",
                     f"{peak:.0f} MB", "-", None, "< 300 MB", check(peak, "< 300"), 1,
                     note or f"{rate_text(records, result.wall)}", values))
        self.add(Row("B6", "RSS growth from 25% to 100% of the run",
                     f"{growth:+.1f} MB", f"{at_quarter:.0f} MB at 25%",
                     growth / at_quarter if at_quarter else None, "<= 0.1 (flat)",
                     check(growth / at_quarter if at_quarter else None, "<= 0.1"), 1,
                     "ratio: growth / RSS at 25%" + (
                         "; a short run: its first quarter is still kcp's start-up"
                         if result.wall < 30 else ""), {}))

    # B7 -------------------------------------------------------------------------------------
    def latency(self, topic: str, cmd: list[str]) -> tuple[list[float], int]:
        """Produce LATENCY_MESSAGES small JSON records at LATENCY_RATE/s, each carrying its send
        time; return the delays until cmd printed each line, in ms (and how many were lost)."""
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=self.env, bufsize=0)
        received: dict[int, float] = {}
        warm = threading.Event()

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.perf_counter()
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("warm"):
                        warm.set()
                    else:
                        received[record["i"]] = (now - record["sent"]) * 1000

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        producer = Producer({"bootstrap.servers": self.kafka.bootstrap, "linger.ms": 0})
        try:
            deadline = time.monotonic() + 30
            while not warm.is_set():  # until the reader is assigned and printing
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} printed nothing in 30 s")
                producer.produce(topic, json.dumps({"warm": True, "sent": 0}).encode())
                producer.flush(5)
                warm.wait(0.2)
            time.sleep(0.5)
            started = time.perf_counter()
            for i in range(LATENCY_MESSAGES):
                pause = started + i / LATENCY_RATE - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                payload = {"i": i, "sent": time.perf_counter(), "objectId": "ZTF18abcdefg",
                           "magpsf": 18.5}
                producer.produce(topic, json.dumps(payload).encode())
                producer.poll(0)
            producer.flush(10)
            deadline = time.monotonic() + 5
            while len(received) < LATENCY_MESSAGES and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return sorted(received.values()), LATENCY_MESSAGES - len(received)

    def b7(self) -> None:
        topic = self.kafka.topic("latency")
        kcp, kcp_lost = self.latency(topic, [self.kcp, "tail", topic])
        if self.kcat:
            kcat, kcat_lost = self.latency(topic, [self.kcat, "-C", "-b", self.kafka.bootstrap,
                                                   "-t", topic, "-o", "end", "-u", "-q"])
        else:
            kcat, kcat_lost = [], 0
        self.kafka.delete(topic)

        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        values = {"kcp_p50_ms": pct(kcp, 50), "kcp_p99_ms": pct(kcp, 99),
                  "kcp_max_ms": max(kcp, default=None), "kcp_lost": kcp_lost,
                  "kcat_p50_ms": pct(kcat, 50), "kcat_p99_ms": pct(kcat, 99),
                  "kcat_lost": kcat_lost, "messages": LATENCY_MESSAGES,
                  "rate_per_s": LATENCY_RATE}
        note = f"{LATENCY_MESSAGES} small JSON records at {LATENCY_RATE}/s; peer kcat -C -o end -u"
        if kcp_lost or kcat_lost:
            note += f"; lines missing: kcp {kcp_lost}, kcat {kcat_lost}"
        for q, target in ((50, "-"), (99, "< 50 ms")):
            mine, theirs = pct(kcp, q), pct(kcat, q)
            ok = check(mine, target) if target != "-" else None
            if q == 99 and kcp_lost:
                ok = False
            self.add(Row("B7", f"produce -> kcp tail stdout latency p{q}", ms(mine),
                         f"kcat {ms(theirs)}", mine / theirs if mine and theirs else None,
                         target, ok, 1, note if q == 99 else "", values if q == 99 else {}))

    # B8 -------------------------------------------------------------------------------------
    def b8(self) -> None:
        if self.kafka.log_dir is None:
            self.skipped("B8", "bytes per alert on the broker",
                         "needs the broker's log directory: an own broker, or KCP_BENCH_LOG_DIR")
            return
        sample = self.b8_sample()
        count = sum(1 for _ in sample.open("rb"))
        sizes: dict[tuple[str, str], float] = {}
        for framing in ("ocf", "confluent", "single-object"):
            for compression in ("none", "lz4", "zstd"):
                topic = self.kafka.topic(f"wire-{framing}-{compression}")
                result = run([self.kcp, "produce", topic, "--to", framing, "--schema", str(SCHEMA),
                              "--schema-id", "1", "-X", f"compression.type={compression}",
                              str(sample)], self.env)
                best([result], f"kcp produce --to {framing} compression {compression}")
                if self.kafka.count(topic) != count:
                    raise RuntimeError(f"{topic}: {self.kafka.count(topic)} messages, not {count}")
                sizes[framing, compression] = self.kafka.log_bytes(topic) / count
                self.kafka.delete(topic)
        ztf = sizes["ocf", "none"]
        for (framing, compression), size in sizes.items():
            saving = (ztf - size) * ZTF_NIGHT / 1e9
            self.add(Row("B8", f"bytes/alert {framing} + {compression}", f"{size / 1e3:.1f} kB",
                         f"ZTF ocf+none {ztf / 1e3:.1f} kB", size / ztf, "-", None, 1,
                         f"{saving:+.1f} GB saved per 1M-alert night" if size != ztf
                         else f"{ztf * ZTF_NIGHT / 1e9:.1f} GB per 1M-alert night",
                         {"bytes_per_alert": size, "saved_gb_per_1m": saving}))

    def b8_sample(self) -> Path:
        n = min(B8_SAMPLE, len(self.files))
        path = CACHE / f"sample-{n}-seed{SEED}.jsonl"
        if not path.exists():
            # The same synthetic alerts as JSON Lines: every framing is then encoded from it.
            result = run([self.kcp, "cp", *map(str, self.files[:n]), str(path)], self.env)
            best([result], "kcp cp (B8 sample)")
        return path


def kcp_executable() -> str:
    candidate = Path(sys.executable).parent / "kcp"
    return str(candidate) if candidate.exists() else (shutil.which("kcp") or "kcp")


# -- the machine and the versions ---------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"cpu": model, "cores": CORES, "ram_gib": memory, "platform": platform.platform(),
            "load_average_at_start": LOAD_AT_START}


def versions(kcat: str | None, broker_version: str) -> dict[str, str]:
    found = {"python": platform.python_version(), "fastavro": fastavro.__version__,
             "confluent-kafka": getattr(confluent_kafka, "__version__", None)
             or confluent_kafka.version()[0],
             "librdkafka": confluent_kafka.libversion()[0], "kafka broker": broker_version}
    with contextlib.suppress(Exception):
        text = subprocess.run([kcp_executable(), "--version"], capture_output=True, text=True,
                              timeout=30).stdout
        found["kcp"] = text.strip().removeprefix("kcp ")
    with contextlib.suppress(Exception):  # the tree measured: others may be editing it
        found["kcp commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=30).stdout.strip()
    if kcat:
        text = subprocess.run([kcat, "-V"], capture_output=True, text=True).stdout
        match = re.search(r"Version (\S+) .*librdkafka (\S+)", text)
        found["kcat"] = f"{match.group(1)} (librdkafka {match.group(2)})" if match else text[:80]
    return found


def jar_version() -> str:
    jars = sorted(KAFKA_LIBS.glob("kafka_*-*.jar"))
    match = re.search(r"kafka_[\d.]+-(.+)\.jar", jars[0].name) if jars else None
    return match.group(1) if match else "unknown"


def has_jobs(kcp: str) -> bool:
    text = subprocess.run([kcp, "consume", "--help"], capture_output=True, text=True).stdout
    return bool(re.search(r"-j, --jobs", text))


# -- main ---------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=int(os.environ.get("BENCH_ALERTS", 20000)),
                        help="synthetic alerts (env BENCH_ALERTS, default 20000)")
    parser.add_argument("--bootstrap", default=os.environ.get("KCP_BENCH_BOOTSTRAP"),
                        help="reuse the broker answering here (env KCP_BENCH_BOOTSTRAP)")
    parser.add_argument("--only", default="", help="figures to run, e.g. B1,B7 (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    only = {f.strip().upper() for f in args.only.split(",") if f.strip()}
    started = time.perf_counter()

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if not kcat:
        say("kcat is not installed: the kcat figures are skipped "
            "(as root: apt-get install -y kcat; make bench does it)")
    night = night_file(args.alerts)
    real, real_records = real_alert_files()

    broker = None
    if args.bootstrap and answers(args.bootstrap):
        bootstrap, broker_version = args.bootstrap, "external"
        log_dir = Path(os.environ["KCP_BENCH_LOG_DIR"]) if os.environ.get(
            "KCP_BENCH_LOG_DIR") else None
        say(f"using the broker on {bootstrap}")
    else:
        if args.bootstrap:
            say(f"nothing answers on {args.bootstrap}: starting a broker of our own")
        broker = start_broker()
        bootstrap, broker_version = broker.bootstrap, jar_version()
        log_dir = broker.workdir / "data"
        say(f"started Kafka {broker_version} on {bootstrap} in {broker.last_start_seconds:.1f} s")
    kafka = Kafka(bootstrap, log_dir)
    # As from a shell: this sandbox's PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE would make
    # every Python child write unbuffered and recompile itself at each start.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")}
    env["KCP_BROKER"] = bootstrap
    try:
        topic = kafka.topic("night")
        say(f"loading {args.alerts:,} synthetic + {real_records} real alerts into {topic}")
        best([run([kcp_executable(), "produce", topic, str(night)], env)], "kcp produce (load)")
        if real:
            best([run([kcp_executable(), "produce", topic, *map(str, real)], env)],
                 "kcp produce (real alerts)")
        records = kafka.count(topic)
        payloads = kafka.payloads(topic, records)
        megabytes = sum(map(len, payloads)) / 1e6
        files = alert_files(args.alerts, payloads)
        say(f"{records:,} alerts, {megabytes:,.0f} MB in the topic; setup took "
            f"{time.perf_counter() - started:.0f} s")
        bench = Bench(kafka, topic, records, megabytes, payloads, files, night, env, kcat,
                      has_jobs(kcp_executable()))
        for name, figure in (("B1", bench.b1), ("B2", bench.b2_b5), ("B3", bench.b3),
                             ("B4", bench.b4), ("B6", bench.b6), ("B7", bench.b7),
                             ("B8", bench.b8), ("B9", bench.b9),
                             ("B10", bench.b10)):
            if only and name not in only and not (name in ("B2", "B10") and "B5" in only):
                continue
            try:
                figure()
            except Exception as error:  # one broken figure must not hide the others
                say(f"{name} failed: {error}")
                bench.add(Row(name, "failed", "error", "-", None, "-", False, 0,
                              str(error).splitlines()[0][:200]))
        del payloads, bench.payloads
        rows = sorted(bench.rows, key=lambda r: r.figure)
    finally:
        with contextlib.suppress(Exception):
            kafka.delete(*kafka.created)
        kafka.admin = None  # gone before the broker, or librdkafka logs the disconnection
        if broker is not None:
            broker.stop()

    elapsed = time.perf_counter() - started
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nkcp benchmark: {records:,} alerts ({args.alerts:,} synthetic + {real_records} real "
          f"ZTF), {megabytes:,.0f} MB; broker Kafka {broker_version} on {bootstrap}; "
          f"{CORES} cores; {elapsed:.0f} s\n")
    if max(LOAD_AT_START[0], load_end[0]) > 0.5 * CORES + 1:
        print(f"warning: the machine was busy (load average {LOAD_AT_START[0]} at the start, "
              f"{load_end[0]} at the end, on {CORES} cores): the times are noisy\n")
    print_table(rows)
    failed = [r for r in rows if r.ok is False]
    print(f"\ntargets: {sum(r.ok is True for r in rows)} met, {len(failed)} missed; "
          f"{sum(r.ok is None for r in rows)} rows informative or skipped")
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "alerts": {"synthetic": args.alerts, "real": real_records, "total": records,
                   "megabytes": round(megabytes, 1)},
        "machine": {**machine(), "load_average_at_end": load_end},
        "versions": versions(kcat, broker_version),
        "broker": {"bootstrap": bootstrap, "own": broker is not None},
        "seconds": round(elapsed, 1),
        "figures": [{**asdict(r), "result": r.result} for r in rows],
    }
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
