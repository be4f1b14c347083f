"""Hostile and malformed input (tests/hostile.py) through the installed kcp: files, tar members
and raw payloads in a real topic.

For every case, under ``--on-error fail``: exit 3 (or 0 when kcp reads it as good data), at
most ONE line on stderr, ``kcp: INPUT[:POSITION]: ...`` naming the input, no traceback, within
a time bound, and below 1 GB of peak memory (the child's ru_maxrss); under ``--on-error skip``
the run moves past it: exit 0 and the good record after it is written. Through a topic also
with ``-j 2``, and a consumer group that stopped on a poison message moves past it when
rerun with skip, and commits it as handled.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile import CASES, POINT, Case, good_ocf, tar_of
from kcptest import KCP, kcp_env

GB = 1 << 30
SECONDS = 60
# The child may reserve address space (librdkafka's threads, malloc arenas) but never this
# much: a regression that inflates a bomb fails fast instead of swapping the machine.
ADDRESS_SPACE = 4 * GB
GOOD = {"n": 1, "x": 0.5}


@dataclass
class Outcome:
    returncode: int
    stdout: bytes
    stderr: bytes
    peak_rss: int  # bytes
    timed_out: bool


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_measured(args: list[str], env: dict[str, str], timeout: float = SECONDS) -> Outcome:
    """Run the installed kcp; its exit status, output and peak RSS (from wait4)."""
    child = subprocess.Popen([KCP, *args], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=_limit_memory)
    output: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: output.__setitem__(n, f.read()))
               for n, f in (("out", child.stdout), ("err", child.stderr))]
    for reader in readers:
        reader.start()
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        child.kill()

    killer = threading.Timer(timeout, stop)
    killer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for reader in readers:
        reader.join()
    return Outcome(child.returncode, output["out"], output["err"], usage.ru_maxrss * 1024,
                   timed_out.is_set())


def check_contract(case: Case, outcome: Outcome, input_name: str) -> None:
    """One case under --on-error fail."""
    text = outcome.stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    assert not outcome.timed_out, f"{case.name}: killed after {SECONDS} s"
    assert outcome.returncode in (0, 3), (outcome.returncode, text)
    lines = text.splitlines()
    if outcome.returncode == 3:
        assert len(lines) == 1, text
        assert lines[0].startswith(f"kcp: {input_name}"), lines[0]
        assert ": " in lines[0][len(f"kcp: {input_name}"):], lines[0]
    else:
        assert lines == [], text
    assert outcome.peak_rss < GB, f"{case.name}: peak RSS {outcome.peak_rss >> 20} MB"


def _args(case: Case, folder: Path) -> list[str]:
    schema = folder / "point.avsc"
    schema.write_text(json.dumps(POINT))
    return [arg.replace("{schema}", str(schema)) for arg in case.args]


def _written(path: Path) -> list[dict]:
    """The records of a sink file, JSON Lines or OCF."""
    if not path.exists() or not path.stat().st_size:
        return []
    if path.suffix == ".avro":
        import fastavro

        with open(path, "rb") as stream:
            return list(fastavro.reader(stream))
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _has_good(records: list[dict]) -> bool:
    return any(r.get("n") == GOOD["n"] and r.get("x") == GOOD["x"] for r in records)


def _groups(cases: list[Case]) -> list[list[Case]]:
    """Cases run the same way (options, sink) together: one --on-error skip run each."""
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault((case.args, case.sink), []).append(case)
    return list(groups.values())


def _group_id(group: list[Case]) -> str:
    return f"{group[0].sink}{''.join(group[0].args).replace('{schema}', '')}-{len(group)}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case written once as a file, and the good file read after them."""
    folder = tmp_path_factory.mktemp("hostile")
    for case in CASES:
        (folder / case.name).mkdir()
        (folder / case.name / case.filename).write_bytes(case.data())
    (folder / "good.avro").write_bytes(good_ocf([GOOD]))
    return folder


def _bad_file(corpus: Path, case: Case) -> Path:
    return corpus / case.name / case.filename


def test_a_long_string_in_a_json_document_costs_memory_in_proportion(tmp_path: Path) -> None:
    """A pretty-printed document is cut out by scanning its strings: a 20 MB string must not
    cost a backtracking state per character (it took ~2.4 GB, 120 bytes a character; now
    130-340 MB, the copies of the document and of its parsed value)."""
    document = tmp_path / "long.json"
    document.write_bytes(b'{\n  "s": "' + b"x" * (20 << 20) + b'"\n}\n')
    copied = tmp_path / "copy.jsonl"
    read = run_measured(["cp", str(document), str(copied)], kcp_env(None, tmp_path))
    assert read.returncode == 0, read.stderr
    assert copied.stat().st_size > 20 << 20
    assert read.peak_rss < GB, f"peak RSS {read.peak_rss >> 20} MB"


# -- files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_file_is_one_line(case: Case, corpus: Path, tmp_path: Path) -> None:
    bad = _bad_file(corpus, case)
    failed = run_measured(["cp", str(bad), str(corpus / "good.avro"), str(tmp_path / case.sink),
                           *_args(case, tmp_path)], kcp_env(None, tmp_path))
    check_contract(case, failed, str(bad))


@pytest.mark.parametrize("group", _groups(CASES), ids=_group_id)
def test_skip_gets_past_hostile_files(group: list[Case], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / group[0].sink
    skipped = run_measured(["cp", *(str(_bad_file(corpus, c)) for c in group),
                            str(corpus / "good.avro"), str(out), "--on-error", "skip",
                            *_args(group[0], tmp_path)], kcp_env(None, tmp_path))
    assert skipped.returncode == 0, skipped.stderr
    assert _has_good(_written(out))


# -- tar members ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_tar_member_is_one_line(case: Case, corpus: Path, tmp_path: Path) -> None:
    archive = tmp_path / "night.tar"
    archive.write_bytes(tar_of([(case.filename, _bad_file(corpus, case).read_bytes()),
                              ("good.avro", good_ocf([GOOD]))]))
    failed = run_measured(["cp", str(archive), str(tmp_path / case.sink),
                           *_args(case, tmp_path)], kcp_env(None, tmp_path))
    check_contract(case, failed, f"{archive}:member {case.filename}")


@pytest.mark.parametrize("group", _groups(CASES), ids=_group_id)
def test_skip_gets_past_hostile_tar_members(group: list[Case], corpus: Path,
                                            tmp_path: Path) -> None:
    archive = tmp_path / "night.tar"
    archive.write_bytes(tar_of([*((f"{c.name}-{c.filename}", _bad_file(corpus, c).read_bytes())
                                for c in group), ("good.avro", good_ocf([GOOD]))]))
    out = tmp_path / group[0].sink
    skipped = run_measured(["cp", str(archive), str(out), "--on-error", "skip",
                            *_args(group[0], tmp_path)], kcp_env(None, tmp_path))
    assert skipped.returncode == 0, skipped.stderr
    assert _has_good(_written(out))


# -- topics --------------------------------------------------------------------------------------
TOPIC_CASES = [c for c in CASES if c.topic]


def _produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for payload in payloads:
        producer.produce(topic, payload)
    assert producer.flush(30) == 0


def _payload(case: Case) -> bytes:
    data = case.data()
    # A line-based file travels as its lines: each message is one document.
    return data.rstrip(b"\n") if case.filename.endswith(".jsonl") else data


@pytest.mark.parametrize("case", TOPIC_CASES, ids=[c.name for c in TOPIC_CASES])
def test_a_hostile_message_is_one_line(case: Case, kafka_bootstrap: str, make_topic,
                                       tmp_path: Path) -> None:
    topic = make_topic()
    _produce(kafka_bootstrap, topic, [good_ocf([GOOD]), _payload(case), good_ocf([GOOD])])
    failed = run_measured(["cp", topic, str(tmp_path / case.sink), *_args(case, tmp_path)],
                          kcp_env(kafka_bootstrap, tmp_path))
    check_contract(case, failed, f"{topic}[0]@1")


@pytest.mark.parametrize("group", _groups(TOPIC_CASES), ids=_group_id)
def test_skip_gets_past_hostile_messages(group: list[Case], kafka_bootstrap: str, make_topic,
                                         tmp_path: Path) -> None:
    topic = make_topic()
    good = good_ocf([GOOD])
    _produce(kafka_bootstrap, topic, [good, *map(_payload, group), good])
    out = tmp_path / group[0].sink
    skipped = run_measured(["cp", topic, str(out), "--on-error", "skip",
                            *_args(group[0], tmp_path)], kcp_env(kafka_bootstrap, tmp_path))
    assert skipped.returncode == 0, skipped.stderr
    assert sum(_has_good([r]) for r in _written(out)) == 2


POISON = [c for c in TOPIC_CASES if not c.args and c.sink == "out.jsonl"]


def test_parallel_workers_and_a_restarted_group_get_past_poison_messages(
        kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic()
    good = good_ocf([GOOD])
    _produce(kafka_bootstrap, topic, [good, *map(_payload, POISON), good])
    env = kcp_env(kafka_bootstrap, tmp_path)

    parallel = run_measured(["consume", topic, "-j", "2", "--on-error", "skip"], env)
    assert parallel.returncode == 0, parallel.stderr
    assert parallel.stdout.count(b'"n":1') == 2
    stopped = run_measured(["consume", topic, "-j", "2"], env)
    check_contract(POISON[0], stopped, f"{topic}[0]@1")

    group = ["consume", topic, "-g", f"g-{topic}"]
    first = run_measured(group, env)  # stops on the first poison, the record before committed
    check_contract(POISON[0], first, f"{topic}[0]@1")
    assert first.returncode == 3 and first.stdout.count(b'"n":1') == 1
    again = run_measured([*group, "--on-error", "skip"], env)
    assert again.returncode == 0 and again.stdout.count(b'"n":1') == 1, again.stderr
    last = run_measured(group, env)  # every poison message was committed as handled
    assert (last.returncode, last.stdout, last.stderr) == (0, b"", b"")


def test_an_envelope_of_the_wrong_types_is_bad_input_for_produce(kafka_bootstrap: str,
                                                                 make_topic, tmp_path: Path
                                                                 ) -> None:
    topic = make_topic()
    envelopes = tmp_path / "env.jsonl"
    envelopes.write_bytes(b'{"topic": 5, "partition": "x", "timestamp": "soon", "value": 1}\n'
                          b'{"payload": "%s"}\n' % base64.b64encode(json.dumps(GOOD).encode()))
    env = kcp_env(kafka_bootstrap, tmp_path)
    failed = run_measured(["produce", topic, str(envelopes), "--envelope"], env)
    assert (failed.returncode, failed.stderr.decode()) == (
        3, f"kcp: {envelopes}:line 1: envelope topic: expected str or null, got 5\n")
    skipped = run_measured(["produce", topic, str(envelopes), "--envelope", "--on-error",
                            "skip"], env)
    assert skipped.returncode == 0, skipped.stderr
    read = run_measured(["consume", topic], env)
    assert [json.loads(line) for line in read.stdout.splitlines()] == [GOOD], read.stderr
