"""End to end: the installed kcp as a subprocess against the session's real Kafka broker."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kcptest import (
    KCP,
    avro_bytes,
    fastavro_records,
    json_lines,
    kcp_env,
    real_ztf_files,
    run_kcp,
    shared,
)

from kcp.codec import JsonToAvro, Schema
from kcp.synth import write_night

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic night of 40 ZTF-like alerts made by kcp's own generator."""
    path = tmp_path_factory.mktemp("night") / "night.avro"
    write_night(path, 40, seed=7)
    return path


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return kcp_env(kafka_bootstrap, tmp_path)


def raw_payloads(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        records += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    return records


def test_produce_then_consume_the_synthetic_night(env, night, topic, kafka_bootstrap):
    sent = run_kcp(["produce", topic, str(night)], env)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == b""
    # Each record travels as one OCF, as ZTF sends alerts.
    payloads = raw_payloads(kafka_bootstrap, topic, 40)
    assert len(payloads) == 40
    assert all(m.value().startswith(b"Obj\x01") for m in payloads)
    expected = fastavro_records(night)
    assert [next(fastavro.reader(io.BytesIO(m.value()))) for m in payloads] == expected

    got = run_kcp(["consume", topic], env)
    assert got.returncode == 0, got.stderr
    documents = list(json_lines(got.stdout))
    with open(night, "rb") as stream:
        schema = Schema(fastavro.reader(stream).writer_schema)
    restored = [JsonToAvro().datum(d, schema) for d in documents]
    assert avro_bytes(restored, schema.definition) == avro_bytes(expected, schema.definition)


def test_every_real_ztf_file_round_trips_and_corrupt_ones_fail_cleanly(env, topic):
    good, corrupt = real_ztf_files()
    sent = run_kcp(["produce", topic, *map(str, good)], env)
    assert sent.returncode == 0, sent.stderr
    got = run_kcp(["consume", topic], env)
    assert got.returncode == 0, got.stderr
    documents = iter(json_lines(got.stdout))
    total = 0
    for path in good:
        with open(path, "rb") as stream:
            reader = fastavro.reader(stream)
            schema = Schema(reader.writer_schema)
            expected = list(reader)
        restored = [JsonToAvro().datum(next(documents), schema) for _ in expected]
        wanted = avro_bytes(expected, schema.definition)
        assert avro_bytes(restored, schema.definition) == wanted, path
        total += len(expected)
    assert next(documents, None) is None
    assert total >= 90  # every version, 1.x to 4.02, with the multi-record Fink files

    for path in corrupt:
        result = run_kcp(["produce", f"{topic}_bad", str(path)], env)
        assert result.returncode == 3, (path, result.stderr)
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"kcp: {path}"), lines
        assert "Traceback" not in result.stderr.decode()


def test_count_returns_exactly_n(env, night, topic):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    got = run_kcp(["consume", topic, "-c", "5"], env)
    assert got.returncode == 0
    assert len(list(json_lines(got.stdout))) == 5


def test_consume_into_head_exits_zero_without_traceback(env, night, topic):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    pipeline = f"'{KCP}' consume {topic} | head -1; echo \"status=${{PIPESTATUS[0]}}\""
    result = subprocess.run(pipeline,
                            shell=True, executable="/bin/bash", env=env, capture_output=True,
                            timeout=60)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2 and lines[-1] == "status=0", result.stdout[-200:]
    assert result.stderr == b""


def test_offsets_partitions_and_tail(env, make_topic, kafka_bootstrap):
    topic = make_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition in (0, 1):
        for i in range(5):
            producer.produce(topic, b'{"n": %d, "p": %d}' % (i, partition), partition=partition,
                             timestamp=1_600_000_000_000 + i * 1000)
    producer.flush(10)

    def numbers(*args: str) -> list[tuple[int, int]]:
        result = run_kcp(["consume", topic, *args], env)
        assert result.returncode == 0, result.stderr
        return sorted((d["p"], d["n"]) for d in json_lines(result.stdout))

    assert len(numbers()) == 10
    assert numbers("-p", "1") == [(1, i) for i in range(5)]
    assert numbers("-o", "3") == [(0, 3), (0, 4), (1, 3), (1, 4)]
    assert numbers("-o", "-1") == [(0, 4), (1, 4)]
    assert numbers("-o", "@1600000003000") == [(0, 3), (0, 4), (1, 3), (1, 4)]
    assert numbers("-o", "@2020-09-13T12:26:43Z") == [(0, 3), (0, 4), (1, 3), (1, 4)]
    tail = run_kcp(["tail", topic, "-n", "2", "-e"], env)
    assert tail.returncode == 0, tail.stderr
    assert sorted((d["p"], d["n"]) for d in json_lines(tail.stdout)) == [
        (0, 3), (0, 4), (1, 3), (1, 4)]


def test_group_resumes_where_it_stopped(env, night, topic):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    first = run_kcp(["consume", topic, "-g", "readers", "-c", "15"], env)
    rest = run_kcp(["consume", topic, "-g", "readers"], env)
    assert first.returncode == rest.returncode == 0, rest.stderr
    candids = [d["candid"] for d in json_lines(first.stdout)] + [
        d["candid"] for d in json_lines(rest.stdout)]
    assert candids == [r["candid"] for r in fastavro_records(night)]


def test_consume_ends_at_the_current_end_of_a_busy_topic(env, topic, kafka_bootstrap):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(200):
        producer.produce(topic, b'{"i": %d}' % i)
    producer.flush(10)
    busy = subprocess.Popen(
        [os.fspath(Path(KCP).with_name("python")), "-c",
         "import sys, time\nfrom confluent_kafka import Producer\n"
         f"p = Producer({{'bootstrap.servers': '{kafka_bootstrap}'}})\n"
         "for i in range(100000):\n"
         f"    p.produce('{topic}', b'{{\"busy\": 1}}'); p.poll(0); time.sleep(0.002)\n"])
    try:
        result = run_kcp(["consume", topic], env, timeout=60)
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0, result.stderr
    assert len(list(json_lines(result.stdout))) >= 200


def test_tail_follows_new_records_and_ctrl_c_exits_130(env, topic, kafka_bootstrap):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b'{"old": true}')
    producer.flush(10)
    tail = subprocess.Popen([KCP, "tail", topic], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # let it reach the end of the topic before the new record arrives
        producer.produce(topic, b'{"new": 1}')
        producer.flush(10)
        line = tail.stdout.readline()
        assert line.strip() == b'{"new":1}'
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=20) == 130
        assert b"Traceback" not in tail.stderr.read()
    finally:
        tail.kill()


def test_produce_json_lines_with_a_schema(env, topic, tmp_path):
    schema = tmp_path / "point.avsc"
    schema.write_text('{"type": "record", "name": "point", "fields": ['
                      '{"name": "ra", "type": "double"}, {"name": "tag", "type": "bytes"}]}')
    lines = b'{"ra": 1.5, "tag": "AAE="}\n{"ra": "NaN", "tag": ""}\n'
    sent = run_kcp(["produce", topic, "--schema", str(schema)], env, stdin=lines)
    assert sent.returncode == 0, sent.stderr
    got = run_kcp(["consume", topic], env)
    assert got.stdout == lines.replace(b": ", b":").replace(b", ", b",")


def test_unreachable_broker_exits_4_quickly(tmp_path, night):
    env = kcp_env("127.0.0.1:1", tmp_path)
    started = time.monotonic()
    result = run_kcp(["produce", "anything", str(night), "--timeout", "3"], env)
    assert result.returncode == 4
    assert time.monotonic() - started < 20
    message = result.stderr.decode().strip()
    assert message.startswith("kcp: cannot reach broker 127.0.0.1:1") and "\n" not in message


def test_no_such_topic_is_a_clear_error(env):
    result = run_kcp(["consume", "no_such_topic_here"], env)
    assert result.returncode == 4
    assert b"no such topic 'no_such_topic_here'" in result.stderr


def test_failed_delivery_is_reported_and_exits_4(env, kafka_bootstrap, night):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"tiny_{os.getpid()}_{time.monotonic_ns()}"
    admin.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": "2000"})])[
        name].result(30)
    result = run_kcp(["produce", name, str(night), "--timeout", "10"], env)
    assert result.returncode == 4
    assert b"not delivered" in result.stderr and b"Traceback" not in result.stderr


def test_rubin_wire_format_decodes_offline_by_id_and_round_trips(env, topic, kafka_bootstrap):
    pytest.importorskip("lsst.alert.packet")
    folder = shared("lsst", "pittgoogle-client", "wire_format")
    frames = {p.name: p.read_bytes() for p in sorted(folder.glob("lsst.v*.avro"))}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for frame in frames.values():
        producer.produce(topic, frame)
    producer.flush(10)
    got = run_kcp(["consume", topic], env)
    assert got.returncode == 0, got.stderr
    documents = list(json_lines(got.stdout))
    assert len(documents) == len(frames) == 10
    # v7.x names the alert by alertId, v8+ by diaSourceId (PROVENANCE.md: all 1231321321).
    assert {d.get("diaSourceId", d.get("alertId")) for d in documents} == {1231321321}

    # JSON back to Rubin's framing: the same bytes as the original message.
    v7_4 = shared("lsst", "alert_packet", "schema", "7", "4")
    line = got.stdout.splitlines()[list(frames).index("lsst.v7_4.avro")] + b"\n"
    sent = run_kcp(["produce", f"{topic}_back", "--to", "confluent", "--schema", str(v7_4),
                    "--schema-id", "704"], env, stdin=line)
    assert sent.returncode == 0, sent.stderr
    (payload,) = raw_payloads(kafka_bootstrap, f"{topic}_back", 1)
    assert payload.value() == frames["lsst.v7_4.avro"]


def test_a_configured_broker_alias(kafka_bootstrap, tmp_path, night, topic):
    env = kcp_env(None, tmp_path)
    env.pop("KCP_BROKER", None)
    config = tmp_path / "config" / "kcp"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        f'[brokers.local]\nbootstrap = "{kafka_bootstrap}"\n"client.id" = "kcp-test"\n')
    assert run_kcp(["produce", f"local:{topic}", str(night)], env).returncode == 0
    got = run_kcp(["consume", f"local:{topic}", "-c", "2"], env)
    assert got.returncode == 0, got.stderr
    assert len(list(json_lines(got.stdout))) == 2
    url = run_kcp(["consume", f"kafka://{kafka_bootstrap}/{topic}", "-c", "1"], env)
    assert len(list(json_lines(url.stdout))) == 1


def test_ctrl_c_in_a_group_commits_what_was_written(env, night, topic):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    follower = subprocess.Popen([KCP, "consume", topic, "-g", "followers", "-f"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = [follower.stdout.readline() for _ in range(40)]
        assert all(seen)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 130
    finally:
        follower.kill()
    again = run_kcp(["consume", topic, "-g", "followers"], env)
    assert again.returncode == 0 and again.stdout == b""


def test_sigterm_finishes_cleanly_with_status_0(env, night, topic):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    follower = subprocess.Popen([KCP, "consume", topic, "-g", "terminated", "-f"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert all(follower.stdout.readline() for _ in range(40))
        follower.terminate()
        assert follower.wait(timeout=20) == 0
        assert follower.stderr.read() == b""
    finally:
        follower.kill()
    assert run_kcp(["consume", topic, "-g", "terminated"], env).stdout == b""


def test_envelope_round_trip_is_byte_for_byte(env, night, topic, kafka_bootstrap):
    with open(night, "rb") as stream:
        payloads = [payload for payload in _ocf_per_record(stream)][:5]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    headers = [("origin", b"ipac"), ("origin", b"again"), ("blob", b"\x00\xff"), ("none", None)]
    for i, payload in enumerate(payloads):
        producer.produce(topic, payload, key=b"\xfe\x01" if i % 2 else b"ZTF18abc",
                         headers=headers, timestamp=1_532_493_131_000 + i)
    producer.flush(10)
    original = raw_payloads(kafka_bootstrap, topic, 5)

    for flags in ([], ["--raw"]):
        copy = f"{topic}_copy{len(flags)}"
        dumped = run_kcp(["consume", topic, "--envelope", *flags], env)
        assert dumped.returncode == 0, dumped.stderr
        first = next(json_lines(dumped.stdout))
        assert first["key"] == "ZTF18abc" and first["headers"]["origin"] == ["ipac", "again"]
        assert first["headers"]["blob"] == {"base64": "AP8="} and first["headers"]["none"] is None
        assert ("value" in first) is not bool(flags)
        sent = run_kcp(["produce", copy, "--envelope"], env, stdin=dumped.stdout)
        assert sent.returncode == 0, sent.stderr
        copied = raw_payloads(kafka_bootstrap, copy, 5)
        assert [(m.key(), m.headers(), m.timestamp(), m.value()) for m in copied] == [
            (m.key(), m.headers(), m.timestamp(), m.value()) for m in original]


def _ocf_per_record(stream):
    reader = fastavro.reader(stream)
    schema = reader.writer_schema
    for record in reader:
        out = io.BytesIO()
        fastavro.writer(out, schema, [record])
        yield out.getvalue()


def test_ls_lists_topics_with_counts_and_times(env, make_topic, kafka_bootstrap):
    topic = make_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(7):
        producer.produce(topic, b"x", partition=i % 2, timestamp=1_600_000_000_000 + i)
    producer.flush(10)
    result = run_kcp(["ls", f"{kafka_bootstrap}:{topic}", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert list(json_lines(result.stdout)) == [{
        "topic": topic, "partitions": 2, "messages": 7, "exact": True,
        "first": 1_600_000_000_000, "last": 1_600_000_000_006}]
    everything = run_kcp(["ls", "--json"], env)
    assert topic in {row["topic"] for row in json_lines(everything.stdout)}


def test_where_selects_what_python_selects_topic_to_topic(env, topic, tmp_path, kafka_bootstrap):
    night = tmp_path / "big-night.avro"
    write_night(night, 300, seed=11)
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    expression = "candidate.rb > 0.5 and candidate.magpsf < 19"
    copied = run_kcp(["cp", topic, f"{topic}_bright", "--where", expression], env)
    assert copied.returncode == 0, copied.stderr
    expected = [r["candid"] for r in fastavro_records(night)
                if r["candidate"]["rb"] is not None and r["candidate"]["rb"] > 0.5
                and r["candidate"]["magpsf"] < 19]
    assert 0 < len(expected) < 300
    selected = raw_payloads(kafka_bootstrap, f"{topic}_bright", len(expected))
    # The selected alerts travel unchanged: the very OCF payloads of the source topic.
    assert [next(fastavro.reader(io.BytesIO(m.value())))["candid"] for m in selected] == expected
    source = {m.offset(): m.value() for m in raw_payloads(kafka_bootstrap, topic, 300)}
    assert all(m.value() in source.values() for m in selected)

    projected = run_kcp(["consume", f"{topic}_bright", "--fields", "candid,candidate.magpsf"],
                        env)
    assert [sorted(d) for d in json_lines(projected.stdout)] == [["candid", "candidate"]] * len(
        expected)


def test_every_direction_of_cp_round_trips_real_ztf_alerts(env, topic, tmp_path):
    good, _ = real_ztf_files()
    expected = []
    for path in good:
        with open(path, "rb") as stream:
            reader = fastavro.reader(stream)
            schema = Schema(reader.writer_schema)
            expected += [(schema, record) for record in reader]

    def check_json_lines(data: bytes) -> None:
        documents = list(json_lines(data))
        assert len(documents) == len(expected)
        for document, (schema, record) in zip(documents, expected, strict=True):
            restored = JsonToAvro().datum(document, schema)
            assert avro_bytes([restored], schema.definition) == avro_bytes(
                [record], schema.definition)

    steps = [
        (["cp", *map(str, good), topic], None),                       # file -> topic
        (["cp", topic, f"{topic}_copy"], None),                       # topic -> topic
        (["cp", f"{topic}_copy", str(tmp_path / "a.jsonl")], "a.jsonl"),    # topic -> file
        (["cp", *map(str, good), str(tmp_path / "b.jsonl")], "b.jsonl"),    # file -> file
        (["cp", f"{topic}_copy", str(tmp_path / "c.env"), "--envelope"], None),
        (["cp", str(tmp_path / "c.env"), f"{topic}_replay", "--envelope"], None),
        (["cp", f"{topic}_replay", "-"], "-"),                          # topic -> stdout
    ]
    for args, output in steps:
        result = run_kcp(args, env)
        assert result.returncode == 0, (args, result.stderr)
        if output == "-":
            check_json_lines(result.stdout)
        elif output:
            check_json_lines((tmp_path / output).read_bytes())


def test_parallel_jobs_keep_order_count_and_error_policy(env, night, topic, kafka_bootstrap):
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"Obj\x01 torn alert")
    producer.flush(10)
    serial = run_kcp(["consume", topic, "--on-error", "skip"], env)
    parallel = run_kcp(["consume", topic, "-j", "2", "--on-error", "skip"], env)
    assert serial.returncode == parallel.returncode == 0, parallel.stderr
    assert parallel.stdout == serial.stdout
    assert len(parallel.stdout.splitlines()) == 40
    counted = run_kcp(["consume", topic, "-j", "2", "-c", "7"], env)
    assert len(counted.stdout.splitlines()) == 7
    failed = run_kcp(["consume", topic, "-j", "2"], env)
    assert failed.returncode == 3
    assert failed.stderr.decode().startswith(f"kcp: {topic}[0]@40: ")
    assert len(failed.stdout.splitlines()) == 40  # everything before the bad record
    filtered = run_kcp(["consume", topic, "-j", "2", "--where", "candidate.magpsf < 18",
                        "--on-error", "skip"], env)
    assert filtered.stdout == run_kcp(["consume", topic, "--where", "candidate.magpsf < 18",
                                       "--on-error", "skip"], env).stdout


def test_parallel_consumer_processes_share_a_group(env, night, make_topic, kafka_bootstrap):
    """-j 2 into a pipe: two consumer processes in one group, each record once, in partition
    order; the group's commits follow what was written (head, SIGTERM, poison messages)."""
    topic = make_topic(4)
    producers = [subprocess.Popen([KCP, "produce", topic, str(night), "-p", str(partition)],
                                  env=env) for partition in range(4)]
    assert [producer.wait(timeout=60) for producer in producers] == [0] * 4

    def positions(data: bytes) -> list[tuple[int, int]]:
        return [(record["partition"], record["offset"]) for record in json_lines(data)]

    first = run_kcp(["consume", topic, "-j", "2", "-g", "pair", "--envelope"], env)
    assert first.returncode == 0, first.stderr
    read = positions(first.stdout)
    assert sorted(read) == [(p, o) for p in range(4) for o in range(40)]  # each once
    for partition in range(4):  # in order within a partition
        offsets = [o for p, o in read if p == partition]
        assert offsets == sorted(offsets)
    again = run_kcp(["consume", topic, "-j", "2", "-g", "pair"], env)
    assert (again.returncode, again.stdout) == (0, b"")
    shared = run_kcp(["consume", topic, "-j", "3", "--envelope"], env)  # no group: shares
    assert sorted(positions(shared.stdout)) == sorted(read), shared.stderr

    started = time.monotonic()
    head = subprocess.run(f"'{KCP}' consume {topic} -j 2 -g heads | head -1", shell=True,
                          env=env, capture_output=True, timeout=30)
    assert head.returncode == 0 and len(head.stdout.splitlines()) == 1, head.stderr
    assert time.monotonic() - started < 15

    stopped = subprocess.Popen([KCP, "consume", topic, "-j", "2", "-g", "stopped",
                                "--envelope"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        line = stopped.stdout.readline()  # the pipe is full behind it: a run stopped midway
        stopped.terminate()
        rest = stopped.stdout.read()
        assert stopped.wait(timeout=30) == 0
    finally:
        stopped.kill()
    written = line + rest
    before = positions(written[:written.rfind(b"\n") + 1])  # a record cut by the stop: read again
    after = positions(run_kcp(["consume", topic, "-j", "2", "-g", "stopped", "--envelope"],
                              env).stdout)
    assert set(before) | set(after) == set(read) and len(before) < len(read)

    following = subprocess.Popen([KCP, "consume", topic, "-j", "2", "-f"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert following.stdout.readline()
        children = subprocess.run(["pgrep", "-P", str(following.pid)], capture_output=True,
                                  text=True).stdout.split()
        os.kill(int(children[0]), signal.SIGKILL)  # a dying process is reported, not waited for
        _, stderr = following.communicate(timeout=30)
        assert following.returncode == 1 and b"consumer process" in stderr
    finally:
        following.kill()

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"Obj\x01 torn alert", partition=2)
    producer.flush(10)
    skipped = run_kcp(["consume", topic, "-j", "2", "--on-error", "skip"], env)
    assert skipped.returncode == 0 and len(skipped.stdout.splitlines()) == 160
    failed = run_kcp(["consume", topic, "-j", "2", "-p", "2"], env)
    assert failed.returncode == 3 and len(failed.stdout.splitlines()) == 40
    assert failed.stderr.decode().startswith(f"kcp: {topic}[2]@40: ")


def test_topic_to_topic_json_is_the_same_from_either_codec(env, night, topic, kafka_bootstrap):
    """cp T T2 --to json takes the native path (finished documents as payloads): the payloads
    are those of the Python codec, byte for byte."""
    assert run_kcp(["produce", topic, str(night)], env).returncode == 0
    for codec in ("1", "0"):
        copied = run_kcp(["cp", topic, f"{topic}_json{codec}", "--to", "json"],
                         {**env, "KCP_NATIVE": codec})
        assert copied.returncode == 0, copied.stderr
    native, python = (raw_payloads(kafka_bootstrap, f"{topic}_json{codec}", 40)
                      for codec in ("1", "0"))
    assert [m.value() for m in native] == [m.value() for m in python]
    assert len(native) == 40 and native[0].value().startswith(b"{")
