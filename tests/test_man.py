"""The committed man pages are what `make man` generates from today's --help texts."""

from __future__ import annotations

import difflib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def generator():
    spec = importlib.util.spec_from_file_location("make_man", ROOT / "scripts" / "make_man.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_pages_are_up_to_date():
    expected = generator().pages()
    committed = {p.name: p.read_text() for p in (ROOT / "man").glob("*.1")}
    stale = sorted(n for n in expected.keys() | committed.keys()
                   if expected.get(n) != committed.get(n))
    first = "\n".join(list(difflib.unified_diff(
        committed.get(stale[0], "").splitlines(), expected.get(stale[0], "").splitlines(),
        "committed", "generated", lineterm=""))[:12]) if stale else ""
    assert not stale, f"stale man pages {stale}: run `make man` and commit man/\n{first}"


def test_pages_have_the_sections_people_look_for():
    pages = generator().pages()
    assert {"kcp.1", "kcp-consume.1", "kcp-produce.1", "kcp-tail.1", "kcp-cp.1"} <= set(pages)
    for text in pages.values():
        for section in (".SH NAME", ".SH SYNOPSIS", ".SH ENVIRONMENT", ".SH FILES",
                        ".SH EXIT STATUS"):
            assert section in text
    assert ".SH EXAMPLES" in pages["kcp-consume.1"]


def test_man_renders_without_warnings():
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                             str(ROOT / "man" / "kcp-consume.1")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_name_lines_say_the_name_once_and_summaries_whole():
    pages = generator().pages()
    assert "\n.SH NAME\nkcp \\- netcat for Kafka/Avro\n" in pages["kcp.1"]
    for text in pages.values():
        name_line = text.split(".SH NAME\n", 1)[1].split("\n", 1)[0]
        assert "kcp:" not in name_line and not name_line.endswith("..."), name_line
    commands = pages["kcp.1"].split(".SH COMMANDS\n", 1)[1].split(".SH", 1)[0]
    assert "..." not in commands
    assert "the lag in messages and in time (the age of the oldest unread message)." in commands
    if shutil.which("man") is not None:  # as a person reads it: man ./man/kcp.1
        shown = subprocess.run(["man", str(ROOT / "man" / "kcp.1")], capture_output=True,
                               text=True, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
        assert shown.returncode == 0, shown.stderr
        assert "kcp - netcat for Kafka/Avro\n" in shown.stdout
