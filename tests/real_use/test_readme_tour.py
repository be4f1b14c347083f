"""The README's tour, verbatim: every command of its console blocks, as typed, against the real
broker (the config's ``local`` and ``ztf`` aliases name it; tonight's topic holds a synthetic
night).  Outputs differ from the README's (other random alerts); what must hold is that each
command works: exit status 0, something printed where the README shows output, no traceback."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kcptest import REPO_ROOT, SHARED_DATA

from kcp.synth import write_night

TOPIC = "ztf_20180725_programid1"
README = REPO_ROOT / "README.md"
# The packet PROVENANCE.md lists as not well-formed XML (text before the declaration): kcp
# refuses it, as it should (tests/test_voevent.py), so a tour of GCN streams leaves it out.
NOT_XML = {"FRB140514_update.xml"}


def tour_commands() -> list[str]:
    """The ``$ `` lines of the README's console blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", README.read_text(), re.S):
        pending = ""
        for line in block.splitlines():
            if pending:
                pending += " " + line.strip()
            elif line.startswith("$ "):
                pending = line[2:]
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            commands.append(pending)
            pending = ""
    return commands


@pytest.fixture
def tour(broker_shell, kafka_bootstrap, make_topic):
    shell = broker_shell
    config = Path(shell.env["XDG_CONFIG_HOME"]) / "kcp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[brokers.local]\nbootstrap = "{kafka_bootstrap}"\n\n'
                      f'[brokers.ztf]\nbootstrap = "{kafka_bootstrap}"\n')
    if TOPIC not in _topics(shell):
        make_topic(name=TOPIC)
        write_night(shell.folder / "night.avro", 60, seed=25)  # 2 pass the tour's --where
        result = shell.run(f"kcp produce {TOPIC} night.avro")
        assert result.returncode == 0, result.stderr
    packets = SHARED_DATA / "voevent" / "packets"
    if packets.is_dir():  # the GCN packets the tour produces, copied flat to the tmp folder
        (shell.folder / "packets").mkdir()
        for number, packet in enumerate(sorted(packets.rglob("*.xml"))):
            if packet.name not in NOT_XML:
                shutil.copy(packet, shell.folder / "packets" / f"{number}-{packet.name}")
    return shell


def _topics(shell) -> set[str]:
    result = shell.run("kcp ls --json")
    return {line.split('"')[3] for line in result.stdout.decode().splitlines()}


def test_the_tour_has_commands():
    commands = tour_commands()
    assert len(commands) >= 8
    assert any(c.startswith("kcp tail") for c in commands)


@pytest.mark.parametrize("command", tour_commands())
def test_each_tour_command_works_verbatim(tour, command):
    if '"..."' in command:
        pytest.skip("a placeholder, not a command")
    if "jq" in command and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    if "packets/" in command and not (tour.folder / "packets").is_dir():
        pytest.skip("the GCN packets of ../shared/data are not present")
    if "night.tar.gz" in command and not command.startswith(f"kcp cp {TOPIC} night.tar.gz"):
        _archive_the_night(tour)  # made by the tour's previous command
    if command.startswith("kcp tail"):
        _tail(tour, command)
        return
    result = tour.run(command, timeout=120, pipefail=False)  # as in a person's shell
    assert result.returncode == 0, (command, result.stderr)
    assert result.stdout.strip() or "--progress" in command or " > " in command or (
        "--member-format" in command or "&&" in command), command
    assert b"Traceback" not in result.stderr


def _archive_the_night(shell) -> None:
    result = shell.run(f"kcp cp {TOPIC} night.tar.gz")
    assert result.returncode == 0, result.stderr


def _tail(shell, command: str) -> None:
    """``kcp tail T | jq ...`` follows until Ctrl-C, on a terminal (where jq writes each line
    at once): it shows a record produced after it started."""
    follower = subprocess.Popen(["script", "-qfec", command, "/dev/null"], cwd=shell.folder,
                                env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        time.sleep(3)  # tail starts at the end: the record must come after it started
        write_night(shell.folder / "one.avro", 1, seed=99)
        assert shell.run(f"kcp produce {TOPIC} one.avro").returncode == 0
        ready, _, _ = select.select([follower.stdout], [], [], 30)
        assert ready, "no record shown within 30 s"
        line = follower.stdout.readline()  # type: ignore[union-attr]
        plain = re.sub(rb"\x1b\[[0-9;]*m", b"", line)  # jq colours on a terminal
        assert re.fullmatch(rb"\s*\d+(\.\d+)?\s*", plain), line  # a magnitude
    finally:
        os.killpg(follower.pid, signal.SIGINT)
        follower.wait(timeout=10)
