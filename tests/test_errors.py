"""Every common mistake gets one line on stderr that names the input and says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kcp.cli import main
from kcp.synth import write_night


@pytest.fixture
def kcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("KCP_BROKER", raising=False)
    monkeypatch.delenv("KCP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    write_night(tmp_path / "night.avro", 3, seed=1)

    def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False,
                                    prog_name="kcp")
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr  # one line, never a traceback
        return result.exit_code, lines[0]

    return invoke


@pytest.mark.parametrize("args, status, message", [
    (["consume", "t", "--offest", "1"], 2,
     "kcp: No such option '--offest'. (Did you mean one of: '--fields', '--offset'?) "
     "(see 'kcp consume --help')"),
    (["consume"], 2, "kcp: Missing argument 'TOPIC'. (see 'kcp consume --help')"),
    (["cp", "missing.avro", "out.jsonl"], 2, "kcp: missing.avro: no such file"),
    (["cp", "night.avro", "./out.weird"], 2,
     "kcp: ./out.weird: cannot tell the format from the extension; give --to FORMAT"),
    (["convert", "--to", "avro"], 3,
     "kcp: <stdin>:line 1: writing Avro needs a schema for records read as plain JSON: give "
     "--schema FILE"),
    (["convert", "--from", "schemaless"], 2,
     "kcp: schemaless Avro needs its schema: give --schema FILE"),
    (["consume", "t", "-o", "yesterday"], 2,
     "kcp: -o yesterday: expected beginning, end, N, -N, @MS or @ISO-8601"),
    (["consume", "t", "--where", "candidate.rb >"], 2,
     'kcp: --where: column 15: unexpected end of expression in "candidate.rb >"'),
    (["convert", "--schema", "nowhere.avsc"], 2,
     "kcp: nowhere.avsc: no such schema file or folder"),
    (["consume", "bad topic name"], 2,
     "kcp: bad topic name: 'bad topic name' is not a valid Kafka topic name "
     "(letters, digits, '.', '_' and '-')"),
])
def test_common_mistakes(kcp, args, status, message):
    stdin = b'{"a": 1}\n' if args[0] == "convert" and "avro" in args else b"\x01\x02"
    assert kcp(*args, stdin=stdin) == (status, message)


def test_wrong_format_names_the_input_and_position(kcp):
    status, message = kcp("cp", "night.avro", "-", "--from", "json")
    assert status == 3
    assert message.startswith("kcp: night.avro:line 1: invalid JSON")


def test_unknown_broker_alias(kcp):
    status, message = kcp("consume", "ztff:alerts", "--timeout", "1")
    assert status == 4
    assert message.startswith("kcp: cannot reach broker ztff within 1s")
    assert message.endswith("'ztff' is not a broker alias of the config file (kcp config show)")
