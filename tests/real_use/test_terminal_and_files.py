"""What reaches the screen and what reaches files, under a real terminal and in real pipes."""

from __future__ import annotations

import io
import os
import re
import stat

import fastavro
import orjson
import pytest
from conftest import NIGHT_ALERTS

ESC = b"\x1b["


def lines_of(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines()]


def test_a_copy_to_a_file_from_a_terminal_writes_compact_json_lines(shell, night):
    screen = shell.terminal("kcp cp night.avro out.jsonl")
    assert screen.status == 0, screen.text
    data = (shell.folder / "out.jsonl").read_bytes()
    assert ESC not in data
    records = lines_of(data)  # one document per line, or this fails
    assert len(records) == NIGHT_ALERTS
    # base64 cutouts, not the terminal's "<N bytes>" sizes
    assert not records[0]["cutoutScience"]["stampData"].startswith("<")


def test_records_on_the_terminal_are_indented_and_coloured(shell, night):
    screen = shell.terminal("kcp convert --no-pager < night.avro -c 1")
    assert screen.status == 0, screen.text
    assert ESC + b"34m" in screen.text  # keys in colour
    assert b'\r\n  "' in screen.text or b'\n  \x1b' in screen.text  # indented
    # cutouts as what they are, not screens of base64
    assert re.search(rb'"stampData"\x1b\[0m: \x1b\[32m"<[\d,]+ bytes gzip FITS>"\x1b\[0m\r\n',
                     screen.text)


def test_no_color_keeps_the_terminal_plain(shell, night):
    screen = shell.terminal("NO_COLOR=1 kcp convert --no-pager < night.avro -c 1")
    assert screen.status == 0
    assert ESC + b"34m" not in screen.text


def test_a_pipe_gets_json_lines_even_from_a_terminal(shell, night):
    screen = shell.terminal("kcp convert < night.avro | cat")
    assert screen.status == 0, screen.text
    assert ESC not in screen.text  # no colour, and no progress line redrawn among the records
    assert len(screen.text.strip().splitlines()) == NIGHT_ALERTS


def test_progress_shows_on_the_terminal_when_the_records_go_to_a_file(shell, night):
    screen = shell.terminal("kcp cp night.avro out.jsonl")
    assert f"kcp: {NIGHT_ALERTS} records".encode() in screen.text
    assert ESC not in (shell.folder / "out.jsonl").read_bytes()


def test_binary_output_is_refused_on_a_terminal_but_not_in_a_pipe(shell, night):
    screen = shell.terminal("kcp convert --to avro < night.avro")
    assert screen.status == 2
    assert b"refusing to write avro data to a terminal" in screen.text
    assert b"Obj\x01" not in screen.text
    piped = shell.terminal("kcp convert --to avro < night.avro | cat > copy.avro")
    assert piped.status == 0, piped.text
    with open(shell.folder / "copy.avro", "rb") as stream:
        assert len(list(fastavro.reader(stream))) == NIGHT_ALERTS


def test_avro_into_a_pipe_and_back(shell, night):
    shell.run("kcp convert < night.avro > alerts.jsonl && kcp schema night.avro > alert.avsc")
    result = shell.run("kcp convert --to avro --schema alert.avsc < alerts.jsonl | cat"
                       " | kcp convert | wc -l")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == NIGHT_ALERTS
    assert result.stderr == b""
    result = shell.run("kcp cp night.avro - --to avro | kcp convert --to avro | cat")
    assert result.returncode == 0, result.stderr
    assert len(list(fastavro.reader(io.BytesIO(result.stdout)))) == NIGHT_ALERTS


# Every writer, through a pipe, read back by kcp from that pipe.
WRITERS = {
    "json": "",
    "avro": "",
    "envelope": "",
    "raw": "",
    "voevent": "",
    "fits": "-c 1",
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_works_into_a_pipe(shell, night, name):
    limit = WRITERS[name]
    result = shell.run(f"kcp convert --to {name} {limit} < night.avro | cat > out.{name}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    expected = 1 if limit else NIGHT_ALERTS
    back = shell.run(f"kcp convert --from {name} < out.{name} | wc -l")
    assert back.returncode == 0, back.stderr
    assert int(back.stdout) == expected


@pytest.mark.parametrize("name", ["confluent", "single-object", "schemaless"])
def test_payload_framings_into_a_file_are_a_usage_error(shell, night, name):
    result = shell.run(f"kcp convert --to {name} < night.avro | cat > out.bin")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert b"for Kafka payloads" in result.stderr


@pytest.mark.parametrize("command", [
    "kcp convert < night.avro | head -1",
    "kcp cp night.avro - | head -1",
    "kcp convert --to avro < night.avro | head -c 10",
    "kcp convert --to voevent < night.avro | head -1",
])
def test_a_closed_downstream_pipe_is_success(shell, night, command):
    result = shell.run(command)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""


@pytest.mark.parametrize("target, says", [
    ("> /dev/full", "No space left on device"),
    (">&-", "Bad file descriptor"),
])
@pytest.mark.parametrize("name", ["json", "avro", "voevent"])
def test_an_output_that_fails_is_one_line_and_status_1(shell, night, target, says, name):
    result = shell.run(f"kcp convert --to {name} < night.avro {target}")
    assert result.returncode == 1
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert text.count("\n") == 1, text
    assert says in text and "<stdout>" in text, text


def test_a_device_is_written_in_place_and_a_full_one_is_named(shell, night):
    # A full device of the test's own (the machine's /dev/full would be replaced by a file if
    # kcp renamed its output into place, as it once did)
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(shell.folder / "full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    result = shell.run("kcp cp night.avro full --to json")
    assert result.returncode == 1
    assert result.stderr.decode() == "kcp: full: No space left on device\n"
    assert (shell.folder / "full").is_char_device()  # not replaced by a file named like it
    assert not (shell.folder / "full.part").exists()
    result = shell.run("mkfifo pipe; (kcp cp night.avro pipe --to json &); wc -l < pipe")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == NIGHT_ALERTS
    assert (shell.folder / "pipe").is_fifo()
