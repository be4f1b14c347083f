"""Output for people (issue 19, items 11 to 13): what a terminal shows (cutouts, text payloads,
a pager, progress), what a mistyped or not yet existing topic says, VOEvent options that
cannot apply, and Rubin schema ids resolved offline."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from conftest import NIGHT_ALERTS
from kcptest import KCP
from test_first_hour import _lines, produce_night

PAGER = '#!/bin/sh\n# a pager that records what it is given\ncat > "$(dirname "$0")/paged.txt"\n'


@pytest.mark.parametrize("line, given", [
    ("kcp convert --authority ivo://example.org/ztf < night.avro", "--authority shapes"),
    ("kcp cp night.avro out.jsonl --cutouts omit", "--cutouts shapes"),
    ("kcp cp night.avro out.avro --cutouts embed --authority ivo://example.org/ztf",
     "--authority and --cutouts shape"),
])
def test_voevent_options_without_voevent_output_are_a_usage_error(shell, night, line, given):
    result = shell.run(line)
    assert result.returncode == 2, result.stderr
    message = result.stderr.decode()
    assert message.count("\n") == 1 and given in message and "--to voevent" in message, message
    assert result.stdout == b""
    assert sorted(p.name for p in shell.folder.iterdir()) == ["night.avro"]


def test_voevent_options_shape_voevent_output(shell, night):
    result = shell.run("kcp cp night.avro one.xml -c 1 --cutouts omit "
                       "--authority ivo://example.org/ztf")
    assert result.returncode == 0, result.stderr
    packet = (shell.folder / "one.xml").read_text()
    assert 'ivorn="ivo://example.org/ztf#' in packet and "stampData" not in packet


def test_cutouts_on_a_terminal_say_what_they_are(shell, night):
    screen = shell.terminal("NO_COLOR=1 kcp convert --no-pager -c 1 < night.avro")
    assert screen.status == 0, screen.text
    stamps = re.findall(rb'"stampData": "<([\d,]+) bytes gzip FITS>"', screen.text)
    assert len(stamps) == 3, screen.text[-400:]
    assert all(int(size.replace(b",", b"")) > 1000 for size in stamps)


def test_long_output_on_a_terminal_goes_through_the_pager(shell, night):
    (shell.folder / "pager").write_text(PAGER)
    (shell.folder / "pager").chmod(0o755)
    paged = shell.folder / "paged.txt"
    screen = shell.terminal("PAGER=./pager kcp convert < night.avro")
    assert screen.status == 0, screen.text
    assert b"objectId" not in screen.text  # every record went to the pager
    assert paged.read_text().count('"objectId"') == NIGHT_ALERTS
    paged.unlink()
    for line in ("PAGER=./pager kcp convert --no-pager -c 2 < night.avro",
                 "PAGER=./pager kcp cp night.avro - | cat",  # a pipe is never paged
                 "PAGER=no-such-pager kcp convert -c 2 < night.avro"):  # none: written directly
        screen = shell.terminal(line)
        assert screen.status == 0, screen.text
        assert not paged.exists(), line
        assert screen.text.count(b'"objectId"') == (NIGHT_ALERTS if "cat" in line else 2), line


def test_a_bounded_read_of_a_topic_is_paged_a_followed_one_is_not(broker_shell, night, topic):
    shell = broker_shell
    produce_night(shell, topic)
    (shell.folder / "pager").write_text(PAGER)
    (shell.folder / "pager").chmod(0o755)
    screen = shell.terminal(f"PAGER=./pager kcp consume {topic} -f -c 2")
    assert screen.status == 0, screen.text
    assert screen.text.count(b'"objectId"') == 2
    assert not (shell.folder / "paged.txt").exists()
    screen = shell.terminal(f"PAGER=./pager kcp consume {topic}")
    assert screen.status == 0, screen.text
    assert (shell.folder / "paged.txt").read_text().count('"objectId"') == NIGHT_ALERTS


def test_text_payloads_show_as_text_on_a_terminal_only(broker_shell, topic):
    from confluent_kafka import Producer

    shell = broker_shell
    notice = (b"TITLE:            GCN/SWIFT NOTICE\nNOTICE_DATE:      Fri 27 Jul 18 04:32:11 UT\n"
              b"TRIGGER_NUM:      853451\n")
    producer = Producer({"bootstrap.servers": shell.env["KCP_BROKER"]})
    for payload in (b"hello, kafka", notice):
        producer.produce(topic, payload)
    assert producer.flush(10) == 0
    screen = shell.terminal(f"kcp consume {topic} --no-pager")
    assert screen.status == 0, screen.text
    assert screen.text == b"hello, kafka\r\n" + notice.replace(b"\n", b"\r\n")
    # pipes get what they always got: the payloads exactly with --raw, no guessing without
    result = shell.run(f"kcp consume {topic} --raw | cat")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, kafka\n" + notice + b"\n"
    result = shell.run(f"kcp consume {topic} | cat")
    assert result.returncode == 3 and b"matches no Avro framing" in result.stderr


def test_a_mistyped_topic_is_answered_with_the_nearest_name(broker_shell, make_topic):
    shell = broker_shell
    topic = make_topic(name=f"ztf_20180725_programid1_{time.monotonic_ns()}")
    typo = topic.replace("programid1", "programdi1")
    result = shell.run(f"kcp consume {typo} -c 1")
    assert result.returncode == 4
    message = result.stderr.decode()
    assert message.count("\n") == 1 and f"did you mean {topic}?" in message, message


@pytest.mark.parametrize("group", [[], ["-g", "watchers"]], ids=["alone", "in a group"])
def test_tail_waits_for_a_topic_to_be_created_and_reads_it_from_its_start(broker_shell, night,
                                                                          group):
    shell = broker_shell
    topic = f"later_{time.monotonic_ns()}"
    follower = subprocess.Popen([KCP, "tail", topic, "--envelope", "-q", *group],
                                cwd=shell.folder,
                                env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = follower.stderr.readline().decode()
        assert said == (f"kcp: waiting for topic {topic} to be created on broker "
                        f"{shell.env['KCP_BROKER']} (Ctrl-C to stop)\n")
        produce_night(shell, topic)  # created by its first records, as a nightly topic is
        lines = _lines(follower, NIGHT_ALERTS, timeout=30)
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=15)
    assert [orjson.loads(line)["offset"] for line in lines] == list(range(NIGHT_ALERTS))
    assert follower.stderr.read() == b""  # said once


def test_produce_takes_a_rubin_schema_id_that_resolves_offline(broker_shell, topic):
    spec = pytest.importorskip("lsst.alert.packet")
    shell = broker_shell
    sample = Path(spec.__path__[0]) / "schema" / "9" / "0" / "sample_data" / "fakeAlert.avro"
    result = shell.run(f"kcp produce {topic} --to confluent --schema-id 900 {sample}")
    assert result.returncode == 0, result.stderr
    read = shell.run(f"kcp consume {topic} --envelope | cat")
    assert read.returncode == 0, read.stderr
    envelope = orjson.loads(read.stdout)
    assert base64.b64decode(envelope["payload"])[:5] == b"\x00\x00\x00\x03\x84"  # id 900
    assert "diaSource" in envelope["value"]
    unknown = shell.run(f"kcp produce {topic} --to confluent --schema-id 999 {sample}")
    assert unknown.returncode == 2 and b"--schema-id 999: no schema has this id" in unknown.stderr


def test_progress_counts_alike_live_and_at_the_end_with_percent_and_time_left(
        broker_shell, night, topic):
    shell = broker_shell
    produce_night(shell, topic)
    screen = shell.terminal(f"kcp cp {topic} out.jsonl --pace 12/s")
    assert screen.status == 0, screen.text
    text = screen.text.decode()
    live = re.findall(r"kcp: (\d+) records?, [\d.]+ MB, \d+ records/s, (\d+)%, \d+:\d\d left",
                      text)
    assert live, text
    assert all(0 <= int(percent) <= 100 for _, percent in live)
    assert text.rsplit("\r\x1b[K", 1)[-1].startswith(f"kcp: {NIGHT_ALERTS} records, ")
    screen = shell.terminal("kcp cp night.avro one.jsonl -c 1")
    assert screen.text.startswith(b"kcp: 1 record, "), screen.text


def test_ctrl_c_says_how_many_records_were_written(shell, night):
    screen = shell.terminal("timeout --preserve-status -s INT 2 "
                            "kcp cp night.avro paced.jsonl --pace 4/s")
    assert screen.status == 130, screen.text
    written = (shell.folder / "paced.jsonl.part").read_bytes().count(b"\n")
    assert 0 < written < NIGHT_ALERTS
    last = screen.text.decode().splitlines()[-1]
    assert last == f"kcp: interrupted ({written} records written)", screen.text
