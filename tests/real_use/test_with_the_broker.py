"""The commands people chain through pipes, against the real broker."""

from __future__ import annotations

import io
import re
import textwrap

import fastavro
import pytest
from conftest import NIGHT_ALERTS
from lxml import etree

import kcp

ESC = b"\x1b["


def produce_night(shell, topic: str) -> None:
    result = shell.run(f"kcp produce {topic} night.avro")
    assert result.returncode == 0, result.stderr


def test_avro_from_a_pipe_into_a_topic_and_out_again(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic()
    result = shell.run(f"kcp cp night.avro - --to avro | kcp produce {topic}")
    assert result.returncode == 0, result.stderr
    result = shell.run(f"kcp consume {topic} --to avro | cat")
    assert result.returncode == 0, result.stderr
    records = list(fastavro.reader(io.BytesIO(result.stdout)))
    assert len(records) == NIGHT_ALERTS
    with open(night, "rb") as stream:
        assert [r["candid"] for r in records] == [r["candid"] for r in fastavro.reader(stream)]


def test_parallel_workers_write_every_format(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic(partitions=2)
    produce_night(shell, topic)
    result = shell.run(f"kcp consume {topic} -j 2 --to voevent | cat")
    assert result.returncode == 0, result.stderr
    packets = [p for p in re.split(rb"(?=<\?xml)", result.stdout) if p.strip()]
    assert len(packets) == NIGHT_ALERTS
    for packet in packets:
        etree.fromstring(packet)
    # an Avro container file cannot take bytes encoded apart: workers hand decoded records
    result = shell.run(f"kcp consume {topic} -j 2 --to avro | kcp convert | wc -l")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == NIGHT_ALERTS


def test_a_terminal_reader_piping_to_another_program_sees_clean_lines(broker_shell, night,
                                                                      make_topic):
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    screen = shell.terminal(f"kcp consume {topic} | cat")
    assert screen.status == 0, screen.text
    assert ESC not in screen.text
    assert len(screen.text.strip().splitlines()) == NIGHT_ALERTS


def test_the_library_example_runs(broker_shell, night, make_topic, monkeypatch):
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    example = textwrap.dedent(kcp.__doc__.split("::", 1)[1].split("\n\n")[1])
    assert "plan(" in example
    monkeypatch.chdir(shell.folder)
    monkeypatch.setenv("KCP_BROKER", shell.env["KCP_BROKER"])
    monkeypatch.setenv("XDG_CONFIG_HOME", shell.env["XDG_CONFIG_HOME"])
    exec(compile(example.replace("ztf_20180725_programid1", topic), "kcp.__doc__", "exec"),
         {"__name__": "example"})
    with open(shell.folder / "night.avro", "rb") as stream:
        assert len(list(fastavro.reader(stream))) == NIGHT_ALERTS


def test_a_topic_into_a_file_from_a_terminal_is_compact(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    screen = shell.terminal(f"kcp consume {topic} > out.jsonl && kcp cp {topic} copy.jsonl")
    assert screen.status == 0, screen.text
    for name in ("out.jsonl", "copy.jsonl"):
        data = (shell.folder / name).read_bytes()
        assert ESC not in data and len(data.splitlines()) == NIGHT_ALERTS


def test_a_json_topic_gets_compact_payloads_from_a_terminal(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic()
    screen = shell.terminal(f"kcp cp night.avro {topic} --to json")
    assert screen.status == 0, screen.text
    result = shell.run(f"kcp consume {topic} --raw")
    payloads = result.stdout.splitlines()
    assert len(payloads) == NIGHT_ALERTS
    assert all(p.startswith(b'{"') and ESC not in p for p in payloads)



COMMANDS = [
    "kcp consume {topic}",
    "kcp consume {topic} -j 2",  # consumer processes writing the output themselves
    "kcp tail {topic} -n 5 -e",
    "kcp cp {topic} -",
    "kcp schema {topic}",
    "kcp schema --all {topic}",
    "kcp ls",
    "kcp lag {group}",
]


@pytest.fixture
def busy_topic(broker_shell, night, make_topic):
    topic = make_topic()
    produce_night(broker_shell, topic)
    group = f"g_{topic}"
    result = broker_shell.run(f"kcp consume {topic} -g {group} -c 3 -q > /dev/null")
    assert result.returncode == 0, result.stderr
    return topic, group


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_in_a_pipe_to_head_and_to_a_full_disk(broker_shell, busy_topic, command):
    topic, group = busy_topic
    line = command.format(topic=topic, group=group)
    result = broker_shell.run(f"{line} | head -1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"\n") == 1 and result.stderr == b""
    result = broker_shell.run(f"{line} > /dev/full")
    assert result.returncode == 1
    assert result.stderr.decode().endswith(": No space left on device\n"), result.stderr
    assert result.stderr.count(b"\n") == 1
