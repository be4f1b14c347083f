"""Real signals in the middle of a copy to a file: only a finished copy takes the final name."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import BIN


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_stopped_copy_keeps_its_part_name_and_says_so(shell, signum, status):
    lines = shell.folder / "many.jsonl"
    with open(lines, "w") as out:
        for number in range(2_000_000):
            out.write(f'{{"n": {number}}}\n')
    copy = subprocess.Popen([f"{BIN}/kcp", "cp", "many.jsonl", "out.jsonl"], cwd=shell.folder,
                            env=shell.env, stderr=subprocess.PIPE)
    partial = shell.folder / "out.jsonl.part"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 0):
        assert copy.poll() is None and time.monotonic() < deadline, "the copy ended too soon"
        time.sleep(0.05)
    copy.send_signal(signum)
    _, stderr = copy.communicate(timeout=10)
    assert copy.returncode == status, stderr
    assert not (shell.folder / "out.jsonl").exists()
    kept = partial.read_bytes()
    assert 0 < kept.count(b"\n") < 2_000_000
    assert b"the copy did not finish" in stderr and b"out.jsonl.part" in stderr
    assert b"Traceback" not in stderr
