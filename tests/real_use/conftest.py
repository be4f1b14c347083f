"""The real-use tier: the installed ``kcp`` as a person runs it, in real pipes and under a real
pseudo-terminal, with signals, a full disk and a closed stdout.  Nothing here runs kcp in-process.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from kcptest import KCP, kcp_env

from kcp.synth import write_night

BIN = str(Path(KCP).parent)
NIGHT_ALERTS = 12


@dataclass
class Screen:
    """What a command run under a terminal printed on it (stdout and stderr mixed, as a person
    sees them), and its exit status."""

    status: int
    text: bytes


@dataclass
class Shell:
    """Runs shell command lines as a person types them: kcp on PATH, a fresh config, a folder."""

    folder: Path
    env: dict[str, str]

    def run(self, line: str, stdin: bytes | None = None, timeout: float = 60,
            pipefail: bool = True) -> subprocess.CompletedProcess[bytes]:
        """``line`` in bash with pipes for stdin, stdout and stderr (a script, a CI job); with
        ``pipefail`` the status is the last failing command's of a pipeline."""
        options = ["-o", "pipefail"] if pipefail else []
        return subprocess.run(["bash", *options, "-c", line], input=stdin,
                              cwd=self.folder, env=self.env, capture_output=True, timeout=timeout)

    def terminal(self, line: str, timeout: float = 60, columns: int = 100) -> Screen:
        """``line`` in bash whose stdin, stdout and stderr are one pseudo-terminal."""
        pid, master = pty.fork()
        if pid == 0:  # the child: the terminal is its controlling tty
            os.chdir(self.folder)
            os.environ.clear()
            os.environ.update(self.env, COLUMNS=str(columns), TERM="xterm-256color")
            os.execvp("bash", ["bash", "-o", "pipefail", "-c", line])
        screen = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not chunk:
                        break
                    screen += chunk
            else:
                os.kill(pid, 9)
                raise AssertionError(f"{line!r} still running after {timeout}s: {bytes(screen)!r}")
        finally:
            os.close(master)
        _, status = os.waitpid(pid, 0)
        return Screen(os.waitstatus_to_exitcode(status), bytes(screen))


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    env = kcp_env(None, tmp_path)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.pop("NO_COLOR", None)
    return Shell(tmp_path, env)


@pytest.fixture
def night(shell: Shell) -> Path:
    """A synthetic night of ZTF-like alerts (real gzipped FITS cutouts) as one OCF file."""
    path = shell.folder / "night.avro"
    write_night(path, NIGHT_ALERTS, seed=7)
    return path


@pytest.fixture
def broker_shell(shell: Shell, kafka_bootstrap: str) -> Shell:
    shell.env["KCP_BROKER"] = kafka_bootstrap
    return shell
