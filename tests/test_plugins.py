"""User stages: --map functions, --pipe-through programs, entry-point plugins, the example."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from kcptest import KCP, REPO_ROOT, json_lines, kcp_env, run_kcp

from kcp.cli import main
from kcp.synth import write_night

EXAMPLE = str(REPO_ROOT / "examples" / "fast_riser.py")
PIPE = f"{sys.executable} {REPO_ROOT / 'examples' / 'fast_riser_pipe.py'}"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("night") / "night.avro"
    write_night(path, 400, seed=21)
    return path


def kcp(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False,
                              prog_name="kcp")


def test_map_and_pipe_through_give_the_same_output(night):
    mapped = kcp("convert", "--map", f"{EXAMPLE}:classify", stdin=night.read_bytes())
    piped = kcp("convert", "--pipe-through", PIPE, stdin=night.read_bytes())
    assert mapped.exit_code == piped.exit_code == 0, piped.stderr
    assert mapped.stdout_bytes == piped.stdout_bytes
    risers = list(json_lines(mapped.stdout_bytes))
    assert 0 < len(risers) < 400
    assert all(r["kcp_fast_riser"] is True and r["kcp_rise_rate"] >= 0.5 for r in risers)


def test_map_adds_declared_fields_to_the_avro_schema(night, tmp_path):
    out = tmp_path / "annotated.avro"
    result = kcp("cp", str(night), str(out), "--map", f"{EXAMPLE}:annotate")
    assert result.exit_code == 0, result.stderr
    with open(out, "rb") as stream:
        reader = fastavro.reader(stream)
        names = [f["name"] for f in reader.writer_schema["fields"]]
        records = list(reader)
    assert names[-2:] == ["kcp_rise_rate", "kcp_fast_riser"]
    assert len(records) == 400
    # Backward compatible: the original schema still reads the extended records.
    with open(night, "rb") as stream:
        original = fastavro.reader(stream).writer_schema
    with open(out, "rb") as stream:
        assert len(list(fastavro.reader(stream, reader_schema=original))) == 400


def module(tmp_path: Path, body: str) -> str:
    path = tmp_path / "stage.py"
    path.write_text(body)
    return str(path)


def test_steps_run_in_command_line_order_and_hooks_run_once(tmp_path):
    log = tmp_path / "log"
    stage = module(tmp_path, f"""
def setup(options):
    open({str(log)!r}, "a").write("setup\\n")
def teardown():
    open({str(log)!r}, "a").write("teardown\\n")
def double(record):
    record["n"] *= 2
    return record
def split(record):
    return [dict(record, part=1), dict(record, part=2)]
""")
    lines = b"".join(b'{"n": %d}\n' % n for n in range(1, 6))
    first = kcp("convert", "--where", "n > 2", "--map", f"{stage}:double", stdin=lines)
    assert [d["n"] for d in json_lines(first.stdout_bytes)] == [6, 8, 10]
    second = kcp("convert", "--map", f"{stage}:double", "--where", "n > 2",
                 "--map", f"{stage}:split", stdin=lines)
    assert [(d["n"], d["part"]) for d in json_lines(second.stdout_bytes)] == [
        (n, p) for n in (4, 6, 8, 10) for p in (1, 2)]
    assert log.read_text().splitlines() == ["setup", "teardown"] * 2


def test_errors_in_a_stage_follow_the_policy_and_name_the_stage(tmp_path):
    stage = module(tmp_path, "def picky(record):\n    return {'ok': 1 / record['n']}\n")
    lines = b'{"n": 1}\n{"n": 0}\n{"n": 2}\n'
    failed = kcp("convert", "--map", f"{stage}:picky", stdin=lines)
    assert failed.exit_code == 3
    assert failed.stderr.strip() == (
        f"kcp: <stdin>:line 2: --map {stage}:picky: ZeroDivisionError: division by zero")
    assert len(failed.stdout_bytes.splitlines()) == 1
    skipped = kcp("convert", "--map", f"{stage}:picky", "--on-error", "skip", stdin=lines)
    assert [d["ok"] for d in json_lines(skipped.stdout_bytes)] == [1.0, 0.5]


@pytest.mark.parametrize("returned", ["'text'", "b'bytes'", "[1, 2]", "5"])
def test_a_map_returning_something_else_than_records_is_bad_input(tmp_path, returned):
    stage = module(tmp_path, f"def odd(record):\n    return {returned}\n")
    failed = kcp("convert", "--map", f"{stage}:odd", stdin=b'{"n": 1}\n')
    assert failed.exit_code == 3
    assert "returns a record (dict), None, or a list of records" in failed.stderr


def test_nan_and_infinity_a_map_adds_outside_the_schema_are_strings_not_null(tmp_path):
    """orjson writes NaN as null; fields decoded from Avro followed docs/json-mapping.md, but
    a field a --map added without OUTPUT_FIELDS (the schema's converter never saw it) did not.
    Through the installed kcp: Avro in, JSON Lines, envelopes and a --pipe-through program out."""
    definition = {"type": "record", "name": "p", "fields": [{"name": "n", "type": "int"},
                                                             {"name": "x", "type": "double"}]}
    avro = io.BytesIO()
    fastavro.writer(avro, fastavro.parse_schema(definition), [{"n": 1, "x": float("nan")}])
    source = tmp_path / "in.avro"
    source.write_bytes(avro.getvalue())
    stage = module(tmp_path, "def add(r):\n    r['score'] = float('nan')\n"
                             "    r['more'] = {'a': [float('-inf'), 1.5, float('inf')]}\n"
                             "    return r\n")
    expected = {"n": 1, "x": "NaN", "score": "NaN", "more": {"a": ["-Infinity", 1.5, "Infinity"]}}
    env = kcp_env(None, tmp_path)
    for extra in ([], ["--pipe-through", "cat"], ["--to", "envelope"]):
        result = run_kcp(["cp", str(source), "-", "--map", f"{stage}:add", *extra], env)
        assert result.returncode == 0 and result.stderr == b"", result.stderr
        [written] = json_lines(result.stdout)
        assert written.get("value", written) == expected, extra


def test_bad_targets_and_fields_are_usage_errors(tmp_path):
    assert "has no function 'nope'" in kcp("convert", "--map", f"{EXAMPLE}:nope").stderr
    assert "not MODULE:FUNCTION" in kcp("convert", "--map", "no-such-plugin").stderr
    stage = module(tmp_path, "OUTPUT_FIELDS = [{'name': 'x', 'type': 'int'}]\n"
                             "def f(record):\n    return record\n")
    result = kcp("convert", "--map", f"{stage}:f", "--schema", str(
        REPO_ROOT / "schemas" / "ztf" / "alert.avsc"), stdin=b'{}\n')
    assert result.exit_code in (2, 3)


def test_a_crashed_or_stuck_program_is_a_clear_error_not_a_hang(tmp_path):
    lines = b'{"n": 1}\n{"n": 2}\n'
    crash = kcp("convert", "--pipe-through", f"{sys.executable} -c 'import sys; sys.exit(7)'",
                stdin=lines)
    assert crash.exit_code == 1
    assert "exited with status 7 after 0 records" in crash.stderr
    started = time.monotonic()
    stuck = kcp("convert", "--pipe-through", f"{sys.executable} -c 'import time; "
                "time.sleep(60)'", "--pipe-timeout", "1", stdin=lines)
    assert stuck.exit_code == 1 and "no answer within 1s" in stuck.stderr
    assert time.monotonic() - started < 20


def test_a_program_that_misbehaves_is_bounded_and_detected(tmp_path):
    """Never reads its input (a 2 MB record fills the pipe), answers endlessly without a
    newline, answers two lines per record: each a clear error within the timeout."""
    big = b'{"s": "' + b"x" * (2 << 20) + b'"}\n'
    started = time.monotonic()
    deaf = kcp("convert", "--pipe-through", f"{sys.executable} -c 'import time; "
               "time.sleep(60)'", "--pipe-timeout", "1", stdin=big)
    assert deaf.exit_code == 1 and "did not read its input within 1s" in deaf.stderr
    assert time.monotonic() - started < 20
    endless = kcp("convert", "--pipe-through", f"{sys.executable} -c 'import sys\nwhile 1: "
                  "sys.stdout.write(\"x\" * 65536)'", "--max-line-size", "1",
                  stdin=b'{"n": 1}\n')
    assert endless.exit_code == 1
    assert "answered a line longer than --max-line-size 1 MB" in endless.stderr
    assert time.monotonic() - started < 25  # the endless writer is not waited for (30 s)
    # Two lines in one write: kcp sees the second before it sends the next record (an extra
    # line arriving only after that is noticed at a later record, or not at all).
    twice = kcp("convert", "--pipe-through", f"{sys.executable} -c 'import sys\nfor line in "
                "sys.stdin: sys.stdout.write(line * 2); sys.stdout.flush()'",
                stdin=b'{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    assert twice.exit_code == 1
    assert "answered more lines than it was given records" in twice.stderr


def test_entry_point_plugins_are_listed_and_usable(tmp_path):
    site = tmp_path / "site"
    (site / "riser_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "riser_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: riser-plugin\nVersion: 1.0\n")
    (site / "riser_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[kcp.stages.v1]\nfast-risers = riser_plugin:classify\n")
    (site / "riser_plugin.py").write_text(Path(EXAMPLE).read_text())
    env = kcp_env(None, tmp_path)
    env["PYTHONPATH"] = str(site)
    listed = subprocess.run([KCP, "plugins", "--json"], env=env, capture_output=True,
                            check=True)
    assert {"kind": "stage", "name": "fast-risers", "target": "riser_plugin:classify",
            "package": "riser-plugin"} in list(json_lines(listed.stdout))
    lines = b'{"candidate": {"fid": 1, "jd": 10.0, "magpsf": 15.0, "rb": 0.9},' \
            b' "prv_candidates": [{"candid": 1, "fid": 1, "jd": 9.0, "magpsf": 17.0}]}\n'
    used = subprocess.run([KCP, "convert", "--map", "fast-risers"], env=env, input=lines,
                          capture_output=True)
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["kcp_rise_rate"] == 2.0


@pytest.mark.kafka
def test_two_processes_share_a_topic_exactly_once(kafka_bootstrap, make_topic, night, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    source = make_topic(partitions=4)
    output = make_topic(partitions=1)
    assert run_kcp(["produce", source, str(night)], env).returncode == 0
    command = [KCP, "cp", source, output, "-g", "classifiers", "-f", "--exactly-once",
               "--map", f"{EXAMPLE}:annotate"]
    workers = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "check",
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(output, 0, 0)])
    received = []
    deadline = time.monotonic() + 120
    try:
        while len(received) < 400 and time.monotonic() < deadline:
            received += [m.value() for m in consumer.consume(100, 1) if m.error() is None]
        time.sleep(2)  # anything beyond 400 would be a duplicate: give it time to show
        received += [m.value() for m in consumer.consume(100, 1) if m.error() is None]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        statuses = [worker.wait(30) for worker in workers]
        consumer.close()
    assert statuses == [0, 0], [w.stderr.read() for w in workers]
    records = [next(fastavro.reader(io.BytesIO(value))) for value in received]
    assert sorted(r["candid"] for r in records) == sorted(
        r["candid"] for r in fastavro.reader(open(night, "rb")))
    schema = fastavro.reader(io.BytesIO(received[0])).writer_schema
    assert [f["name"] for f in schema["fields"]][-2:] == ["kcp_rise_rate", "kcp_fast_riser"]
    for record in records:
        assert fastavro.validation.validate(record, schema)
