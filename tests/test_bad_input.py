"""A corpus of bad input through the installed kcp: files, and raw payloads in a real topic.

For each kind of damage, under each --on-error policy:
- fail (default): exit 3, ONE line ``kcp: INPUT@POSITION: what is wrong`` on stderr, no
  traceback, and every record before the bad one already written;
- skip: the run goes on, and the --progress summary counts what it skipped;
- dead-letter:PATH: the bad payload is kept raw (base64) with its metadata as JSON Lines.

Already covered elsewhere, not repeated here: real corrupt ZTF files at the codec level
(test_codec_real_data), a torn synthetic night and JSON/schema mismatches in-process
(test_cli_files), real corrupt ZTF files through `kcp produce` and a torn payload with -j
(test_cli_kafka).
"""

from __future__ import annotations

import base64
import io
import random
import re
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from kcptest import json_lines, kcp_env, run_kcp, shared

SCHEMA = {"type": "record", "name": "point", "fields": [
    {"name": "n", "type": "int"},
    {"name": "a", "type": ["null", "int"]},
    {"name": "s", "type": "string"},
]}


# -- building damaged Avro by hand ---------------------------------------------------------------

def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = b""
    while n & ~0x7F:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def body(n: int, union_index: int = 0, text: bytes = b"x") -> bytes:
    """The schemaless body of record n (a = null unless union_index says otherwise)."""
    return zigzag(n) + zigzag(union_index) + zigzag(len(text)) + text


def ocf(bodies: list[bytes], sync: bytes | None = None, tail: bytes = b"") -> bytes:
    """An OCF with one record per block; ``sync`` replaces the sync marker after the last
    block (a corrupt marker), ``tail`` is appended (garbage)."""
    out = io.BytesIO()
    fastavro.writer(out, SCHEMA, [], codec="null")
    header = out.getvalue()
    marker = header[-16:]
    blocks = [zigzag(1) + zigzag(len(b)) + b + marker for b in bodies]
    if sync is not None:
        blocks[-1] = blocks[-1][:-16] + sync
    return header + b"".join(blocks) + tail


def good(n: int) -> dict[str, Any]:
    return {"n": n, "a": None, "s": "x"}


def json_line(n: int) -> bytes:
    return orjson.dumps(good(n)) + b"\n"


GOOD_BODIES = [body(i) for i in range(3)]
# Deterministic "random" bytes whose first byte is no framing's (0x00, C3 01, Obj, '{', '[').
RANDOM = b"\x9c" + random.Random(7).randbytes(299)
UNKNOWN_ID = 987654


# -- files ---------------------------------------------------------------------------------------

@dataclass
class FileCase:
    """Files to copy (in order), where the first error is, and the records around it."""

    files: dict[str, bytes]
    where: str             # FILE:POSITION of the error, FILE relative to the folder
    says: str              # a phrase of the message
    before: list[int]      # the n of every record written before the error
    skipped_output: list[int]  # the n of every record written under --on-error skip
    kept_value: bytes | None = None  # the raw payload dead-letter keeps, when there is one
    flags: list[str] = field(default_factory=list)


FILE_CASES = {
    "truncated-ocf": FileCase(
        {"torn.avro": ocf([*GOOD_BODIES, body(3)])[:-18]},  # into the last record
        "torn.avro:record 4", "truncated", [0, 1, 2], [0, 1, 2]),
    "bad-sync-marker": FileCase(
        {"sync.avro": ocf(GOOD_BODIES, sync=bytes(16)) + ocf([body(3)])[-20:]},
        "sync.avro:record 4", "sync marker", [0, 1, 2], [0, 1, 2]),
    "trailing-garbage": FileCase(
        {"tail.avro": ocf(GOOD_BODIES, tail=b"\x06garbage after the last block")},
        "tail.avro:record 4", "corrupt", [0, 1, 2], [0, 1, 2]),
    "invalid-union-index": FileCase(
        {"union.avro": ocf([*GOOD_BODIES, body(3, union_index=5)])},
        "union.avro:record 4", "corrupt Avro", [0, 1, 2], [0, 1, 2]),
    "invalid-utf8-in-avro-string": FileCase(
        {"utf8.avro": ocf([*GOOD_BODIES, body(3, text=b"\xff\xfe")])},
        "utf8.avro:record 4", "UTF-8", [0, 1, 2], [0, 1, 2]),
    "random-bytes": FileCase(
        {"first.avro": ocf(GOOD_BODIES[:2]), "noise.bin": RANDOM,
         "last.avro": ocf([body(2)])},
        "noise.bin", "matches no Avro framing", [0, 1], [0, 1, 2], kept_value=RANDOM),
    "confluent-unknown-schema-id": FileCase(
        {"first.avro": ocf(GOOD_BODIES[:2]),
         "frame.bin": b"\x00" + struct.pack(">I", UNKNOWN_ID) + body(9),
         "last.avro": ocf([body(2)])},
        "frame.bin", f"unknown schema id {UNKNOWN_ID}", [0, 1], [0, 1, 2],
        kept_value=b"\x00" + struct.pack(">I", UNKNOWN_ID) + body(9)),
    "json-not-matching-the-schema": FileCase(
        {"points.jsonl": json_line(0) + b'{"n": "two", "a": null, "s": "x"}\n' + json_line(2)},
        "points.jsonl:line 2", "field n: expected an integer", [0], [0, 2],
        kept_value=b'{"n": "two", "a": null, "s": "x"}\n', flags=["--schema", "point.avsc"]),
    "invalid-utf8-in-json": FileCase(
        {"points.jsonl": json_line(0) + b'{"n": 1, "a": null, "s": "\xff"}\n' + json_line(2)},
        "points.jsonl:line 2", "UTF-8", [0], [0, 2],
        kept_value=b'{"n": 1, "a": null, "s": "\xff"}\n', flags=["--schema", "point.avsc"]),
    "invalid-json": FileCase(
        {"points.jsonl": json_line(0) + b'{"n": 1, "a": nul\n' + json_line(2)},
        "points.jsonl:line 2", "invalid JSON", [0], [0, 2],
        kept_value=b'{"n": 1, "a": nul\n'),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "point.avsc").write_bytes(orjson.dumps(SCHEMA))
    return tmp_path


def _write(case: FileCase, folder: Path) -> list[str]:
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in case.files]


def _flags(case: FileCase, folder: Path) -> list[str]:
    return [str(folder / f) if f.endswith(".avsc") else f for f in case.flags]


def _ns(data: bytes) -> list[int]:
    return [d["n"] for d in json_lines(data)]


def one_line(stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_bad_file_fails_in_one_line_keeping_what_came_before(folder, kind):
    case = FILE_CASES[kind]
    sources = _write(case, folder)
    out = folder / "out.jsonl"
    result = run_kcp(["cp", *sources, str(out), *_flags(case, folder)], kcp_env(None, folder))
    line = one_line(result.stderr)
    assert result.returncode == 3, line
    assert line.startswith(f"kcp: {folder / case.where}: "), line
    assert case.says.lower() in line.lower(), line
    assert _ns(out.read_bytes()) == case.before  # the output is kept, under its final name
    assert not (folder / "out.jsonl.part").exists()


@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_bad_file_is_skipped_and_counted(folder, kind):
    case = FILE_CASES[kind]
    sources = _write(case, folder)
    result = run_kcp(["cp", *sources, "-", "--on-error", "skip", "--progress",
                      *_flags(case, folder)], kcp_env(None, folder))
    assert result.returncode == 0, result.stderr
    assert _ns(result.stdout) == case.skipped_output
    summary = result.stderr.decode().rsplit("\r\x1b[K", 1)[-1].strip()
    assert summary.startswith(f"kcp: {len(case.skipped_output)} record")
    assert summary.endswith("; 1 bad record skipped"), summary


@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_bad_file_goes_to_the_dead_letter_file(folder, kind):
    case = FILE_CASES[kind]
    sources = _write(case, folder)
    letters = folder / "dead.jsonl"
    result = run_kcp(["cp", *sources, "-", "--on-error", f"dead-letter:{letters}",
                      *_flags(case, folder)], kcp_env(None, folder))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert _ns(result.stdout) == case.skipped_output
    (letter,) = json_lines(letters.read_bytes())
    assert letter["where"] == str(folder / case.where)
    assert letter["source"] == str(folder / case.where.split(":")[0])
    assert case.says.lower() in letter["error"].lower()
    if case.kept_value is not None:
        assert base64.b64decode(letter["value"]) == case.kept_value


def test_real_file_with_trailing_garbage(folder):
    path = shared("ztf", "ampel-ztf-archive", "schema_4.02.avro")  # read in place
    result = run_kcp(["cp", str(path), str(folder / "out.jsonl")], kcp_env(None, folder))
    line = one_line(result.stderr)
    assert result.returncode == 3
    assert line == (f"kcp: {path}:record 2: truncated or trailing garbage after the last "
                    "complete record (an OCF block declares 276 records, more than its 8 bytes "
                    "can hold)")
    (alert,) = json_lines((folder / "out.jsonl").read_bytes())  # its one good block
    assert alert["objectId"].startswith("ZTF")
    skipped = run_kcp(["cp", str(path), "-", "--on-error", "skip", "--progress"],
                      kcp_env(None, folder))
    assert skipped.returncode == 0
    assert len(list(json_lines(skipped.stdout))) == 1
    assert b"; 1 bad record skipped" in skipped.stderr


# -- the same damage as raw payloads in a real topic -------------------------------------------

def one_ocf(n: int, **damage: Any) -> bytes:
    return ocf([body(n)], **damage)


# Bad payloads as a producer might send them; each is bad whatever kcp is asked to do with it.
BAD_PAYLOADS = {
    "truncated-ocf": (one_ocf(100)[:-20], "truncated"),
    "bad-sync-marker": (one_ocf(100, sync=bytes(16)), "sync marker"),
    "trailing-garbage": (one_ocf(100, tail=b"garbage"), "corrupt"),
    "invalid-union-index": (ocf([body(100, union_index=5)]), "corrupt Avro"),
    "invalid-utf8-in-avro-string": (ocf([body(100, text=b"\xff")]), "UTF-8"),
    "random-bytes": (RANDOM, "matches no Avro framing"),
    "confluent-unknown-schema-id": (b"\x00" + struct.pack(">I", UNKNOWN_ID) + body(100),
                                    f"unknown schema id {UNKNOWN_ID}"),
    "invalid-utf8-in-json": (b'{"n": 100, "a": null, "s": "\xff"}', "UTF-8"),
    "invalid-json": (b'{"n": 100, "a": nul', "invalid JSON"),
}


@pytest.fixture(scope="module")
def bad_topic(kafka_bootstrap: str) -> tuple[str, dict[str, int]]:
    """A topic alternating good OCF alerts (n = 0, 1, 2...) and bad payloads, one of each
    kind; returns its name and the offset of each kind."""
    from confluent_kafka import Producer

    topic = f"bad_{uuid.uuid4().hex[:10]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    offsets = {}
    offset = 0
    producer.produce(topic, one_ocf(0), key=b"good-0")
    for n, (kind, (payload, _)) in enumerate(BAD_PAYLOADS.items(), start=1):
        offset += 1
        offsets[kind] = offset
        producer.produce(topic, payload, key=kind.encode(), headers=[("kind", kind.encode())],
                         timestamp=1_600_000_000_000 + offset)
        producer.produce(topic, one_ocf(n), key=b"good-%d" % n)
        offset += 1
    assert producer.flush(30) == 0
    return topic, offsets


@pytest.mark.kafka
@pytest.mark.parametrize("kind", list(BAD_PAYLOADS))
def test_bad_payload_in_a_topic_fails_in_one_line(kafka_bootstrap, bad_topic, tmp_path, kind):
    topic, offsets = bad_topic
    offset = offsets[kind]
    env = kcp_env(kafka_bootstrap, tmp_path)
    # From the good record just before it: that one is written, then kcp stops.
    result = run_kcp(["consume", topic, "-o", str(offset - 1)], env)
    line = one_line(result.stderr)
    assert result.returncode == 3, line
    assert line.startswith(f"kcp: {topic}[0]@{offset}: "), line
    assert BAD_PAYLOADS[kind][1].lower() in line.lower(), line
    assert _ns(result.stdout) == [offset // 2]


@pytest.mark.kafka
def test_bad_payloads_in_a_topic_under_each_policy(kafka_bootstrap, bad_topic, tmp_path):
    topic, offsets = bad_topic
    env = kcp_env(kafka_bootstrap, tmp_path)
    goods = list(range(len(BAD_PAYLOADS) + 1))

    failed = run_kcp(["cp", topic, str(tmp_path / "night.jsonl")], env)
    assert failed.returncode == 3
    assert one_line(failed.stderr).startswith(f"kcp: {topic}[0]@1: ")
    assert _ns((tmp_path / "night.jsonl").read_bytes()) == [0]

    skipped = run_kcp(["cp", topic, str(tmp_path / "all.jsonl"), "--on-error", "skip",
                       "--progress"], env)
    assert skipped.returncode == 0, skipped.stderr
    assert _ns((tmp_path / "all.jsonl").read_bytes()) == goods
    summary = skipped.stderr.decode().rsplit("\r\x1b[K", 1)[-1].strip()
    assert re.fullmatch(rf"kcp: {len(goods)} records, .*; {len(BAD_PAYLOADS)} bad records "
                        "skipped", summary), summary

    letters = tmp_path / "dead.jsonl"
    dead = run_kcp(["consume", topic, "--on-error", f"dead-letter:{letters}"], env)
    assert dead.returncode == 0, dead.stderr
    assert _ns(dead.stdout) == goods
    kept = {letter["key"] and base64.b64decode(letter["key"]).decode(): letter
            for letter in json_lines(letters.read_bytes())}
    assert set(kept) == set(BAD_PAYLOADS)
    for kind, (payload, says) in BAD_PAYLOADS.items():
        letter = kept[kind]
        assert base64.b64decode(letter["value"]) == payload  # the raw bytes, untouched
        assert (letter["topic"], letter["partition"], letter["offset"]) == (
            topic, 0, offsets[kind])
        assert letter["timestamp"] == 1_600_000_000_000 + offsets[kind]
        assert letter["where"] == f"{topic}[0]@{offsets[kind]}"
        assert says.lower() in letter["error"].lower()


@pytest.mark.kafka
def test_json_payload_not_matching_the_schema_in_a_topic(kafka_bootstrap, tmp_path):
    from confluent_kafka import Producer

    topic = f"badjson_{uuid.uuid4().hex[:10]}"
    schema = tmp_path / "point.avsc"
    schema.write_bytes(orjson.dumps(SCHEMA))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for payload in (json_line(0), b'{"n": "two", "a": null, "s": "x"}', json_line(2)):
        producer.produce(topic, payload.strip())
    assert producer.flush(30) == 0
    env = kcp_env(kafka_bootstrap, tmp_path)
    out = tmp_path / "points.avro"
    result = run_kcp(["cp", topic, str(out), "--schema", str(schema)], env)
    assert result.returncode == 3
    assert one_line(result.stderr) == (
        f"kcp: {topic}[0]@1: field n: expected an integer, got 'two'")
    assert [r["n"] for r in fastavro.reader(io.BytesIO(out.read_bytes()))] == [0]
    skipped = run_kcp(["cp", topic, str(out), "--schema", str(schema), "--on-error", "skip"],
                      env)
    assert skipped.returncode == 0, skipped.stderr
    assert [r["n"] for r in fastavro.reader(io.BytesIO(out.read_bytes()))] == [0, 2]


# -- VOEvent packets and tar archives through the installed kcp ----------------------------------
# Their readers are tested in depth in test_voevent.py and test_tar.py (in-process, and the gzip
# bomb's memory bound in a subprocess); here: the same policies end to end, files and a topic.

GOOD_PACKET = (b'<?xml version="1.0" encoding="UTF-8"?>\n<voe:VOEvent xmlns:voe='
               b'"http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://example.org/kcp#1" '
               b'role="test" version="2.0"><Who><Date>2024-01-01T00:00:00</Date></Who>'
               b'</voe:VOEvent>\n')
MALFORMED_PACKET = b'<VOEvent ivorn="ivo://example.org/kcp#2">\n<Who>\n</VOEvent>'


def xxe_packet(secret: Path) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE VOEvent [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<VOEvent ivorn="ivo://example.org/kcp#3" version="2.0"><Description>&x;'
            '</Description></VOEvent>').encode()


def test_hostile_and_malformed_voevent_packets(folder, kafka_bootstrap):
    from confluent_kafka import Producer

    secret = folder / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    packets = {"good.xml": GOOD_PACKET, "xxe.xml": xxe_packet(secret),
               "malformed.xml": MALFORMED_PACKET, "last.xml": GOOD_PACKET}
    for name, data in packets.items():
        (folder / name).write_bytes(data)
    env = kcp_env(kafka_bootstrap, folder)
    expected = {"xxe.xml": "refused: the document has a DTD",
                "malformed.xml": "not well-formed XML: Opening and ending tag mismatch"}
    outputs = []
    for name, says in expected.items():
        result = run_kcp(["cp", str(folder / "good.xml"), str(folder / name),
                          str(folder / "out.jsonl")], env)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 3
        assert one_line(result.stderr).startswith(f"kcp: {folder / name}: {says}")
        assert len((folder / "out.jsonl").read_bytes().splitlines()) == 1
    letters = folder / "dead.jsonl"
    dead = run_kcp(["cp", *(str(folder / n) for n in packets), "-", "--on-error",
                    f"dead-letter:{letters}", "--progress"], env)
    assert dead.returncode == 0, dead.stderr
    assert len(dead.stdout.splitlines()) == 2
    assert b"2 bad records skipped" in dead.stderr
    kept = {Path(letter["source"]).name: letter for letter in json_lines(letters.read_bytes())}
    assert {n: base64.b64decode(kept[n]["value"]) for n in kept} == {
        "xxe.xml": packets["xxe.xml"], "malformed.xml": MALFORMED_PACKET}
    outputs.append(dead.stdout + dead.stderr)

    topic = f"voe_{uuid.uuid4().hex[:10]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for data in packets.values():
        producer.produce(topic, data)
    assert producer.flush(30) == 0
    failed = run_kcp(["consume", topic, "--from", "voevent"], env)
    assert failed.returncode == 3
    assert one_line(failed.stderr).startswith(f"kcp: {topic}[0]@1: refused: the document has")
    assert len(failed.stdout.splitlines()) == 1
    skipped = run_kcp(["consume", topic, "--on-error", "skip", "--progress"], env)  # detected
    assert skipped.returncode == 0 and len(skipped.stdout.splitlines()) == 2
    assert b"2 bad records skipped" in skipped.stderr
    outputs += [failed.stdout + failed.stderr, skipped.stdout + skipped.stderr]
    assert not any(b"TOP-SECRET" in output for output in outputs)  # no entity was expanded


def test_tar_member_escaping_the_folder_through_a_pipe(folder):
    from hostile import tar_of

    archive = tar_of([("1.avro", ocf([body(0)])), ("../../evil.avro", ocf([body(1)])),
                      ("2.avro", ocf([body(2)]))])
    env = kcp_env(None, folder)
    before = sorted(folder.parent.iterdir())
    failed = run_kcp(["cp", "-", str(folder / "out.jsonl")], env, stdin=archive)
    assert failed.returncode == 3
    assert one_line(failed.stderr).startswith("kcp: <stdin>:member ../../evil.avro: an unsafe "
                                              "member name")
    assert _ns((folder / "out.jsonl").read_bytes()) == [0]
    letters = folder / "dead.jsonl"
    dead = run_kcp(["cp", "-", "-", "--on-error", f"dead-letter:{letters}"], env,
                   stdin=archive)
    assert dead.returncode == 0 and _ns(dead.stdout) == [0, 2]
    (letter,) = json_lines(letters.read_bytes())
    assert letter["where"] == "<stdin>:member ../../evil.avro"
    assert sorted(folder.parent.iterdir()) == before  # nothing was extracted anywhere
    assert not (folder.parent.parent / "evil.avro").exists()
