"""Authentication, TLS and ACLs on a real broker (the `secure_broker` fixture in conftest.py).

Credentials come from config profiles, as a user would keep them: the password inline, in a
password_file, or in an environment variable named by password_env. Every refusal must be one
line, exit status 4, within 10 s; no password may show in any output, whatever the failure.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from kcptest import KCP, json_lines, kcp_env, run_kcp, wait_timed

pytestmark = pytest.mark.kafka

BOB_ENV = "KCP_TEST_BOB_PASSWORD"
WRONG_PASSWORD = f"wrong-{uuid.uuid4().hex}"


def _profile(name: str, entries: dict[str, str]) -> str:
    lines = [f"[brokers.{name}]"]
    for key, value in entries.items():
        lines.append(f'"{key}" = "{value}"')
    return "\n".join(lines) + "\n\n"


def write_profiles(secure: Any, folder: Path) -> Path:
    """A config file with one broker alias per way of connecting, mode 600."""
    folder.mkdir(parents=True, exist_ok=True)
    alice_file = folder / "alice.password"
    alice_file.write_text(secure.passwords["alice"] + "\n")
    alice_file.chmod(0o600)

    def user(name: str, mechanism: str = "SCRAM-SHA-512", tls: bool = False,
             **extra: str) -> dict[str, str]:
        entries = {"bootstrap": secure.sasl_ssl if tls else secure.sasl_plaintext,
                   "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
                   "sasl.mechanism": mechanism, "sasl.username": name}
        if tls:
            entries["ssl.ca.location"] = str(secure.ca)
        entries.update(extra)
        return entries

    profiles = {
        "alice": user("alice", **{"sasl.password": secure.passwords["alice"]}),
        # The same account without the group prefix its ACLs ask for.
        "alice_bare": user("alice", group_prefix="",
                           **{"sasl.password": secure.passwords["alice"]}),
        "alice_tls": user("alice", tls=True, password_file=str(alice_file)),
        "bob": user("bob", "PLAIN", password_env=BOB_ENV),
        "bob_tls": user("bob", "PLAIN", tls=True, password_env=BOB_ENV),
        "carol": user("carol", **{"sasl.password": secure.passwords["carol"]}),
        "mallory": user("mallory", **{"sasl.password": secure.passwords["mallory"]}),
        "dave": user("dave", **{"sasl.password": secure.passwords["dave"]}),
        "wrong": user("alice", **{"sasl.password": WRONG_PASSWORD}),
        "wrong_plain_tls": user("bob", "PLAIN", tls=True, **{"sasl.password": WRONG_PASSWORD}),
        "wrong_ca": user("alice", tls=True, **{"sasl.password": secure.passwords["alice"],
                                               "ssl.ca.location": str(secure.other_ca)}),
        "unreachable": {**user("alice", **{"sasl.password": secure.passwords["alice"]}),
                        "bootstrap": "127.0.0.1:1"},
    }
    path = folder / "config.toml"
    path.write_text("".join(_profile(name, entries) for name, entries in profiles.items()))
    path.chmod(0o600)
    return path


@pytest.fixture
def env(secure_broker: Any, tmp_path: Path) -> dict[str, str]:
    env = kcp_env(None, tmp_path)
    env.pop("KCP_BROKER", None)
    env["KCP_CONFIG"] = str(write_profiles(secure_broker, tmp_path / "kcp"))
    env[BOB_ENV] = secure_broker.passwords["bob"]
    return env


@pytest.fixture(scope="module")
def readable_topic(secure_broker: Any) -> str:
    """A topic the authorised users may use, holding three JSON records."""
    topic = secure_broker.make_topic()
    producer = Producer({**secure_broker.client("admin"), "log_level": 0})
    for i in range(3):
        producer.produce(topic, b'{"n": %d}' % i)
    assert producer.flush(30) == 0
    return topic


def timed(args: list[str], env: dict[str, str], stdin: bytes | None = None
          ) -> tuple[Any, float]:
    started = time.monotonic()
    result = run_kcp(args, env, stdin=stdin, timeout=60)
    return result, time.monotonic() - started


def run_all(commands: list[list[str]], env: dict[str, str], parallel: int = 6
            ) -> list[tuple[int, bytes]]:
    """Each command's (exit status, stdout + stderr), a few running at a time."""
    results: list[tuple[int, bytes]] = []
    for start in range(0, len(commands), parallel):
        running = [subprocess.Popen([KCP, *args], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                   for args in commands[start:start + parallel]]
        for process in running:
            output, _ = process.communicate(timeout=60)
            results.append((process.returncode, output))
    return results


def one_clear_line(result: Any) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("kcp: ")
    return lines[0]


# -- authorised users ----------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["alice", "alice_tls", "bob", "bob_tls"],
                         ids=["scram-sasl_plaintext-inline", "scram-sasl_ssl-password_file",
                              "plain-sasl_plaintext-password_env", "plain-sasl_ssl-password_env"])
def test_an_authorised_user_writes_and_reads(secure_broker, env, alias):
    topic = secure_broker.make_topic()
    sent = run_kcp(["produce", f"{alias}:{topic}", "--raw"], env, stdin=b'{"a": 1}\n{"a": 2}\n')
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == b""  # the config and password files are private: no warning
    got = run_kcp(["consume", f"{alias}:{topic}"], env)
    assert got.returncode == 0, got.stderr
    assert list(json_lines(got.stdout)) == [{"a": 1}, {"a": 2}]
    grouped = run_kcp(["consume", f"{alias}:{topic}", "-g", f"sec_{uuid.uuid4().hex[:8]}"], env)
    assert grouped.returncode == 0, grouped.stderr
    assert list(json_lines(grouped.stdout)) == [{"a": 1}, {"a": 2}]


def test_reading_without_a_group_needs_no_group_acl(secure_broker, env, readable_topic):
    # carol may read topics but join no group: a reader without -g never uses its group.
    got = run_kcp(["consume", f"carol:{readable_topic}"], env)
    assert got.returncode == 0, got.stderr
    assert [d["n"] for d in json_lines(got.stdout)] == [0, 1, 2]
    tail = run_kcp(["tail", f"carol:{readable_topic}", "-n", "1", "-e"], env)
    assert tail.returncode == 0, tail.stderr
    assert [d["n"] for d in json_lines(tail.stdout)] == [2]


def test_group_ids_carry_the_users_prefix(secure_broker, env):
    """Like Rubin's: alice may use only groups named alice-*. Given and generated group ids
    get the prefix (once); without it the same commands are refused."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    topic = secure_broker.make_topic()
    producer = Producer({**secure_broker.client("admin"), "log_level": 0})
    for i in range(2):
        producer.produce(topic, b'{"n": %d}' % i)
    assert producer.flush(30) == 0
    group = f"night{uuid.uuid4().hex[:8]}"
    grouped = run_kcp(["consume", f"alice:{topic}", "-g", group], env)
    assert grouped.returncode == 0, grouped.stderr
    assert [d["n"] for d in json_lines(grouped.stdout)] == [0, 1]
    admin = AdminClient({**secure_broker.client("admin"), "log_level": 0})
    request = [ConsumerGroupTopicPartitions(f"alice-{group}")]
    committed = admin.list_consumer_group_offsets(request)[f"alice-{group}"].result()
    assert [tp.offset for tp in committed.topic_partitions] == [2]
    # Already prefixed: the same group, not alice-alice-... (which has committed nothing).
    again = run_kcp(["consume", f"alice:{topic}", "-g", f"alice-{group}"], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == b""
    shown = orjson.loads(run_kcp(["config", "show"], env).stdout)["brokers"]
    assert (shown["alice"]["group_prefix"], shown["alice_bare"]["group_prefix"]) == ("alice-", "")
    mirror = [f"alice:^{topic}$", "alice:", "--rename", "{topic}_copy", "-f", "-c", "2"]
    copied = run_kcp(["cp", *mirror], env, timeout=60)
    assert copied.returncode == 0, copied.stderr
    got = run_kcp(["consume", f"alice:{topic}_copy"], env)
    assert [d["n"] for d in json_lines(got.stdout)] == [0, 1]
    tail = run_kcp(["tail", f"alice:^{topic}$", "-n", "1", "-c", "1"], env, timeout=60)
    assert tail.returncode == 0, tail.stderr
    assert [d["n"] for d in json_lines(tail.stdout)] == [1]
    for args in (["consume", f"alice_bare:{topic}", "-g", group],
                 ["cp", *[a.replace("alice:", "alice_bare:") for a in mirror]]):
        refused, seconds = timed(args, env)
        line = one_clear_line(refused)
        assert refused.returncode == 4, line
        assert "not authorised for consumer group" in line and seconds < 10, (line, seconds)


# -- refusals ------------------------------------------------------------------------------------

REFUSALS = {
    "no-acl-consume": (["consume", "mallory:{topic}"], "not authorised for topic {topic}"),
    "no-acl-tail": (["tail", "mallory:{topic}", "-e"], "not authorised for topic {topic}"),
    "no-acl-produce": (["produce", "mallory:{topic}", "--raw"], "not authorised for topic {topic}"),
    "no-acl-group": (["consume", "carol:{topic}", "-g", "sec_readers"],
                     "not authorised for consumer group carol-sec_readers"),
    "no-write-acl": (["produce", "carol:{topic}", "--raw"], "not authorised"),
    "no-acl-cp-destination": (["cp", "alice:{topic}", "alice:private_{topic}"],
                              "not authorised for topic private_{topic}"),
    "wrong-password-scram": (["consume", "wrong:{topic}"], "authentication failed"),
    "wrong-password-produce": (["produce", "wrong:{topic}", "--raw"], "authentication failed"),
    "wrong-password-plain-tls": (["consume", "wrong_plain_tls:{topic}"],
                                 "authentication failed"),
    "wrong-ca": (["consume", "wrong_ca:{topic}"], "TLS failed"),
    "unreachable": (["consume", "unreachable:{topic}"],
                    "cannot reach broker unreachable: Connection refused"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_one_clear_line_and_exit_4_within_10s(secure_broker, env, readable_topic,
                                                          case):
    if case == "no-acl-cp-destination":
        secure_broker.make_topic(name=f"private_{readable_topic}")
    args, expected = REFUSALS[case]
    args = [a.format(topic=readable_topic) for a in args]
    result, seconds = timed(args, env, stdin=b'{"a": 1}\n')
    line = one_clear_line(result)
    assert result.returncode == 4, line
    assert seconds < 10, f"{case} took {seconds:.1f} s"
    assert expected.format(topic=readable_topic) in line, line
    assert "not a broker alias" not in line  # every name here is one
    assert result.stdout == b""


def test_an_acl_revoked_while_reading_ends_the_read_in_one_line(secure_broker, env):
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    topic = secure_broker.make_topic()
    admin = AdminClient({**secure_broker.client("admin"), "log_level": 0})
    grant = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:dave", "*",
                       AclOperation.READ, AclPermissionType.ALLOW)
    admin.create_acls([grant])[grant].result()
    producer = Producer({**secure_broker.client("admin"), "log_level": 0})
    producer.produce(topic, b'{"n": 1}')
    assert producer.flush(30) == 0
    reader = subprocess.Popen([KCP, "consume", f"dave:{topic}", "-f"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == b'{"n":1}\n'
        revoke = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                  "User:dave", "*", AclOperation.ANY, AclPermissionType.ANY)
        admin.delete_acls([revoke])[revoke].result()
        started = time.monotonic()
        producer.produce(topic, b'{"n": 2}')  # something to fetch
        assert producer.flush(30) == 0
        status, seconds, _, stderr = wait_timed(reader, started)
    finally:
        reader.kill()
    assert status == 4, stderr
    assert seconds < 10
    lines = stderr.decode().strip().splitlines()
    assert lines == [f"kcp: not authorised for topic {topic} on broker dave (the broker has no "
                     "ACL letting this user use it)"], stderr


# -- secrets -------------------------------------------------------------------------------------

def test_no_password_appears_in_any_output(secure_broker, env, readable_topic):
    secrets = [WRONG_PASSWORD, *secure_broker.passwords.values()]
    topic = readable_topic
    runs = [
        ["consume", f"wrong:{topic}"],
        ["produce", f"wrong:{topic}", "--raw"],
        ["consume", f"wrong_plain_tls:{topic}"],
        ["consume", f"mallory:{topic}"],
        ["produce", f"mallory:{topic}", "--raw"],
        ["consume", f"carol:{topic}", "-g", "sec_readers"],
        ["consume", f"wrong_ca:{topic}"],
        ["consume", f"alice_tls:{topic}", "-c", "1"],
        ["consume", f"bob:{topic}", "-c", "1"],
        ["consume", f"unreachable:{topic}", "--timeout", "2"],
        ["ls", "alice"],
        ["config", "show"],
    ]
    commands = [[*args, *extra] for args in runs for extra in ([], ["--debug"])
                 if not (args[0] == "config" and extra)]
    # librdkafka's own debug log (its configuration dump included) through kcp --debug.
    commands.append(["consume", f"wrong:{topic}", "--debug", "-X", "debug=conf,security"])
    outputs = [(args, *output) for args, output in zip(commands, run_all(commands, env),
                                                       strict=True)]
    assert any(b"sasl.password" in output for *_, output in outputs), \
        "the librdkafka configuration dump was expected in the --debug output"
    for args, status, output in outputs:
        assert status in (0, 4), (args, status, output[-2000:])
        for secret in secrets:
            assert secret.encode() not in output, f"a password leaked in the output of {args}"


def test_readable_config_or_password_file_draws_one_warning(secure_broker, env, readable_topic,
                                                            tmp_path):
    config = Path(env["KCP_CONFIG"])
    config.chmod(0o644)
    shown = run_kcp(["config", "show"], env)
    assert shown.returncode == 0
    assert shown.stderr.decode() == (f"kcp: warning: {config} holds a password and is readable "
                                     "by others (chmod 600 it)\n")
    assert secure_broker.passwords["alice"].encode() not in shown.stdout  # masked
    config.chmod(0o600)
    password_file = tmp_path / "kcp" / "alice.password"
    password_file.chmod(0o640)
    got = run_kcp(["consume", f"alice_tls:{readable_topic}"], env)
    assert got.returncode == 0, got.stderr
    warnings = got.stderr.decode().splitlines()
    assert warnings == [f"kcp: warning: {password_file} holds a password and is readable by "
                        "others (chmod 600 it)"]
    assert len(list(json_lines(got.stdout))) == 3
    password_file.chmod(0o600)
    assert os.stat(password_file).st_mode & 0o077 == 0


def test_exactly_once_to_a_destination_refusing_transactions_is_one_line(secure_broker, env,
                                                                         readable_topic):
    from confluent_kafka import admin as kafka_admin

    # alice may use the sec_ topics and groups and the offsets topic, but no transactional id.
    admin = kafka_admin.AdminClient({**secure_broker.client("admin"), "log_level": 0})
    grant = kafka_admin.AclBinding(
        kafka_admin.ResourceType.TOPIC, "__kcp_offsets", kafka_admin.ResourcePatternType.LITERAL,
        "User:alice", "*", kafka_admin.AclOperation.ALL, kafka_admin.AclPermissionType.ALLOW)
    admin.create_acls([grant])[grant].result()
    destination = secure_broker.make_topic()
    group = f"sec_{uuid.uuid4().hex[:8]}"
    result, seconds = timed(["cp", "-g", group, f"alice:{readable_topic}",
                             f"alice:{destination}", "--exactly-once"], env)
    line = one_clear_line(result)
    assert result.returncode == 4, line
    assert seconds < 10, f"took {seconds:.1f} s"
    assert "broker alice cannot run transactions" in line, line
    # the group as the broker sees it: alice's profile prefixes her groups with "alice-"
    assert f"transactional ids kcp-alice-{group}-" in line, line
