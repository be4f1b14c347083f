"""What a kcat or rpk user meets in the first hour: signals while kcp is blocked, pipes closed
downstream, completion in a real bash, a broker that is down, options that cannot apply."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import orjson
import pytest
from conftest import NIGHT_ALERTS
from kcptest import KCP


def produce_night(shell, topic: str) -> None:
    result = shell.run(f"kcp produce {topic} night.avro")
    assert result.returncode == 0, result.stderr


def _bytes_waiting(pipe) -> int:
    return int.from_bytes(fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")


def _blocked_writing(process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until ``process`` has filled its stdout pipe (which nobody reads): its next write
    blocks."""
    capacity = fcntl.fcntl(process.stdout.fileno(), fcntl.F_GETPIPE_SZ)
    deadline = time.monotonic() + timeout
    while _bytes_waiting(process.stdout) < capacity:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the pipe never filled"
        time.sleep(0.05)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_kcp_blocked_on_a_pipe_nobody_reads(broker_shell, night, make_topic,
                                                           signum, status):
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    # kcp consume -g G T | sleep 60: the reader never reads, the writer blocks
    consumer = subprocess.Popen([KCP, "consume", topic, "-g", "stuck", "-q"], cwd=shell.folder,
                                env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _blocked_writing(consumer)
        sent = time.monotonic()
        consumer.send_signal(signum)
        assert consumer.wait(timeout=15) == status
        took = time.monotonic() - sent
        stderr = consumer.stderr.read().decode()
    finally:
        consumer.kill()
        consumer.wait()
    assert "Traceback" not in stderr
    assert took < 10, f"{took:.1f} s"
    # No record reached the reader whole, so none was committed: the group still has them all.
    result = shell.run(f"kcp consume {topic} -g stuck -q | wc -l")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == NIGHT_ALERTS


def test_tail_into_head_ends_when_head_does(broker_shell, night, make_topic):
    # like tail -f | head: no new record comes, yet the closed pipe is noticed while idle
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    result = shell.run(f"kcp tail {topic} -n 1 | head -1", timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout.count(b"\n") == 1


def _lines(process: subprocess.Popen, count: int, timeout: float) -> list[bytes]:
    """The first ``count`` lines ``process`` writes, or as many as came within ``timeout``."""
    lines: list[bytes] = []
    pending = b""
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            *complete, pending = (pending + chunk).split(b"\n")
            lines += complete
    return lines[:count]


def test_tail_of_a_pattern_reads_a_topic_created_later_from_its_start(broker_shell, night,
                                                                      make_topic):
    shell = broker_shell
    prefix = f"night_{time.monotonic_ns()}"
    produce_night(shell, make_topic(name=f"{prefix}_a"))
    follower = subprocess.Popen(
        [KCP, "tail", f"^{prefix}", "--envelope", "-q",
         "-X", "topic.metadata.refresh.interval.ms=2000"],
        cwd=shell.folder, env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # following, from the end of the topic there was
        # a topic made by its first records, as a survey's nightly topic is: they are there
        # before the follower learns of the topic
        produce_night(shell, f"{prefix}_b")
        lines = _lines(follower, NIGHT_ALERTS, timeout=30)
    finally:
        follower.terminate()
        follower.wait(timeout=15)
    messages = [orjson.loads(line) for line in lines]
    assert [(m["topic"], m["offset"]) for m in messages] == [
        (f"{prefix}_b", offset) for offset in range(NIGHT_ALERTS)]


class Bash:
    """An interactive bash on a pseudo-terminal, typed at like a person does."""

    def __init__(self, shell) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.chdir(shell.folder)
            os.environ.clear()
            os.environ.update(shell.env, TERM="xterm", PS1="$ ")
            os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        self.screen = b""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen:
            assert time.monotonic() < deadline, f"no {text!r} on {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                self.screen += os.read(self.master, 65536)

    def close(self) -> None:
        os.close(self.master)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def test_bash_completes_topics_and_files(broker_shell, night, make_topic):
    shell = broker_shell
    topic = make_topic(name=f"completion_{time.monotonic_ns()}")
    script = shell.run("kcp completion bash")
    assert script.returncode == 0, script.stderr
    (shell.folder / "kcp.bash").write_bytes(script.stdout)
    bash = Bash(shell)
    try:
        bash.type("source kcp.bash\n")
        bash.type(f"kcp consume {topic[:-4]}\t")  # one topic starts so: completed in place
        bash.expect(f"kcp consume {topic} ")
        bash.type("\x15")  # Ctrl-U: a new line
        broker = shell.env["KCP_BROKER"]
        bash.type(f"kcp cp {broker}:{topic[:-4]}\t")  # bash splits the word at ':'
        bash.expect(f"kcp cp {broker}:{topic} ")
        bash.type("./nig\t")  # files too
        bash.expect(f"kcp cp {broker}:{topic} ./night.avro ")
    finally:
        bash.close()


@pytest.mark.parametrize("line, says", [
    ("KCP_BROKER=localhost:1 kcp consume T -c 1",
     "kcp: cannot reach broker localhost:1: Connection refused; is it running?"),
    ("kcp ls localhost:1", "kcp: cannot reach broker localhost:1: Connection refused"),
    ("kcp produce localhost:1:T night.avro",
     "kcp: cannot reach broker localhost:1: Connection refused"),
    ("kcp consume ztff:alerts",
     "'ztff' is not a broker alias of the config file (kcp config show)"),
])
def test_a_broker_that_is_down_is_said_at_once(shell, night, line, says):
    # at once: well within the 30 s --timeout, which is for brokers slow to answer
    started = time.monotonic()
    result = shell.run(line, timeout=25)
    assert time.monotonic() - started < 15
    assert result.returncode == 4
    message = result.stderr.decode()
    assert message.count("\n") == 1 and says in message, message


def test_ls_takes_host_and_port_and_labels_its_columns(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic()
    produce_night(shell, topic)
    broker = shell.env["KCP_BROKER"]  # 127.0.0.1:PORT: a broker, not topic PORT of host
    screen = shell.terminal(f"KCP_BROKER=localhost:1 kcp ls {broker}")
    assert screen.status == 0, screen.text
    header, *rows = screen.text.decode().splitlines()
    assert header.split() == ["topic", "partitions", "messages", "first", "(UTC)", "last", "(UTC)"]
    assert any(row.split()[:3] == [topic, "1", str(NIGHT_ALERTS)] for row in rows), rows


def test_kcat_habits_keys_headers_partitions_and_a_template(broker_shell, night, make_topic):
    shell, topic = broker_shell, make_topic(partitions=2)
    result = shell.run(f"kcp produce {topic} -k ZTF18abc -H origin=ipac -H night=20180725 -p 1 "
                       "night.avro")
    assert result.returncode == 0, result.stderr
    result = shell.run(f"kcp consume {topic} -e -F '%t|%p|%o|%k|%h|%s' | cat")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == NIGHT_ALERTS
    for offset, line in enumerate(lines):
        name, partition, position, key, headers, value = line.split("|", 5)
        assert (name, partition, position, key, headers) == (
            topic, "1", str(offset), "ZTF18abc", "origin=ipac,night=20180725")
        assert orjson.loads(value)["objectId"].startswith("ZTF")  # the decoded Avro record
    for line, says in [(f"kcp consume {topic} -F '%z'", "unknown directive %z"),
                       (f"kcp consume {topic} -f -e", "give one"),
                       (f"kcp produce {topic} -H novalue night.avro", "expected NAME=VALUE")]:
        result = shell.run(line)
        assert result.returncode == 2 and says in result.stderr.decode(), result.stderr


@pytest.mark.parametrize("line, says", [
    ("kcp ls -g foo", "No such option '-g'"),
    ("kcp ls --on-error skip", "No such option '--on-error'"),
    ("kcp lag mirror -q", "No such option '-q'"),
    ("kcp schema night.avro --to voevent", "No such option '--to'"),
    ("kcp schema night.avro --name x", "No such option '--name'"),
    ("kcp schema night.avro --where 'a > 1'", "No such option '--where'"),
    ("kcp convert --timeout 3 < night.avro", "No such option '--timeout'"),
    ("kcp convert -o 3 < night.avro", "No such option '-o'"),
    ("kcp consume T --member-format fits", "No such option '--member-format'"),
    ("kcp produce T -g G night.avro", "No such option '-g'"),
    ("kcp cp night.avro out.jsonl --member-format fits", "this destination is not one"),
    ("kcp cp night.avro out.jsonl -o 5", "a file is read from its start"),
    ("kcp cp night.avro out.jsonl -p 1", "a file is read from its start"),
])
def test_an_option_that_cannot_apply_is_a_usage_error(shell, night, line, says):
    result = shell.run(line)
    assert result.returncode == 2, result.stderr
    message = result.stderr.decode()
    assert message.count("\n") == 1 and says in message, message
    assert not (shell.folder / "out.jsonl").exists()


def test_each_command_lists_only_its_options(shell):
    def listed(command: str) -> set[str]:
        result = shell.run(f"kcp {command} --help")
        assert result.returncode == 0, result.stderr
        return {word.rstrip(",") for line in result.stdout.decode().splitlines()
                if line.startswith("  -") for word in line.split() if word.startswith("-")}

    assert listed("ls") == listed("lag") == {"-X", "--timeout", "--debug", "--json", "-h",
                                             "--help"}
    assert not {"--member-format", "--name"} & (listed("consume") | listed("convert"))
    assert "--member-format" in listed("cp")
    assert not {"-X", "--timeout", "-g", "-o", "-p", "-j"} & listed("convert")
    assert not {"--to", "--where", "--cutouts", "-g", "-c"} & listed("schema")
    assert "--cutouts" in listed("convert") and "--max-member-size" in listed("schema")


def test_schema_from_a_terminal_prints_no_summary(shell, night):
    screen = shell.terminal("kcp schema night.avro > schema.json")
    assert screen.status == 0, screen.text
    assert screen.text == b""
    assert orjson.loads((shell.folder / "schema.json").read_bytes())["type"] == "record"


def test_a_misspelt_field_is_warned_about_once_with_the_nearest_name(shell, night):
    result = shell.run("kcp convert --where 'candidate.magpfs < 16' --fields objectId,candid "
                       "< night.avro | wc -l")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 0
    assert result.stderr.decode() == (
        "kcp: warning: --where: no field candidate.magpfs in the records' schema (did you mean "
        "candidate.magpsf?): it matches nothing\n")
    result = shell.run("kcp convert --where 'candidate.magpsf < 30 and prv_candidates[0].jd > 0'"
                       " --fields objectId,candidate.rb < night.avro | wc -l")
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert int(result.stdout) == NIGHT_ALERTS


def test_plain_json_to_avro_without_a_schema_touches_no_destination(broker_shell, night, topic):
    shell = broker_shell
    assert shell.run("kcp convert < night.avro > night.jsonl").returncode == 0
    for destination in ("x.avro", topic, "x.tar"):
        result = shell.run(f"kcp cp night.jsonl {destination}")
        assert result.returncode == 2
        assert result.stderr.decode().endswith("give --schema FILE\n"), result.stderr
    assert sorted(p.name for p in shell.folder.iterdir()) == ["night.avro", "night.jsonl"]
    listed = shell.run(f"kcp ls --json | grep -c '\"{topic}\"'")
    assert listed.stdout.strip() == b"0"  # the topic was not created


def test_no_clobber_keeps_an_existing_file(shell, night):
    (shell.folder / "kept.jsonl").write_bytes(b"precious\n")
    result = shell.run("kcp cp -n night.avro kept.jsonl")
    assert result.returncode == 2
    assert result.stderr == b"kcp: kept.jsonl: exists, and -n/--no-clobber keeps it\n"
    assert (shell.folder / "kept.jsonl").read_bytes() == b"precious\n"
    assert shell.run("kcp cp -n night.avro new.jsonl").returncode == 0
    assert (shell.folder / "new.jsonl").read_bytes().count(b"\n") == NIGHT_ALERTS


def test_schema_takes_many_sources_as_the_shell_expands_a_glob(shell, night):
    (shell.folder / "again.avro").write_bytes(night.read_bytes())
    result = shell.run("kcp schema --all *.avro")
    assert result.returncode == 0, result.stderr
    [census] = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert census["count"] == 2 * NIGHT_ALERTS
