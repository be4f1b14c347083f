"""The streams of 2026 through the profiles docs/brokers.md documents, on real brokers.

Rubin: the `rubin` profile exactly as documented (SCRAM-SHA-512 over SASL_PLAINTEXT, the
user's group prefix, `registry =`), with only the address, user and password swapped for the
secure test broker's; alerts made from the official v10.0 and v11.0 schemas of
`lsst-alert-packet`, sent in Confluent framing and read back by schema id.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka import Consumer
from kcptest import KCP, LoopbackRegistry, json_lines, kcp_env, run_kcp, wait_timed

from kcp.codec import RubinSchemaTree
from kcp.synth import datum_from_schema

DOCS = Path(__file__).resolve().parent.parent / "docs" / "brokers.md"
# An id no released Rubin schema has: only the profile's registry knows it.
REGISTRY_ONLY_ID = 424242


def documented_profile(name: str) -> dict[str, Any]:
    """The ``[brokers.NAME]`` table of the TOML examples in docs/brokers.md."""
    for block in re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S):
        profiles = tomllib.loads(block).get("brokers", {})
        if name in profiles:
            return profiles[name]
    raise AssertionError(f"docs/brokers.md has no [brokers.{name}] example")


def write_config(path: Path, profiles: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, entries in profiles.items():
        lines.append(f"[brokers.{name}]")
        lines += [f"{json.dumps(key)} = {json.dumps(value)}" for key, value in entries.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def schema_registry() -> Iterator[LoopbackRegistry]:
    with LoopbackRegistry({}) as registry:
        yield registry


@pytest.fixture
def rubin_env(secure_broker: Any, tmp_path: Path, schema_registry: Any) -> dict[str, str]:
    password = tmp_path / "rubin.password"
    password.write_text(secure_broker.passwords["alice"] + "\n")
    password.chmod(0o600)
    profile = documented_profile("rubin")
    assert "group_prefix" not in profile  # the default, the user name and a dash, is used
    profile.update({"bootstrap": secure_broker.sasl_plaintext, "sasl.username": "alice",
                    "password_file": str(password), "registry": schema_registry.url})
    env = kcp_env(None, tmp_path)
    env.pop("KCP_BROKER", None)
    env["KCP_CONFIG"] = str(write_config(tmp_path / "config.toml", {"rubin": profile}))
    return env


def assert_cutout_files(documents: list[dict[str, Any]], root: Path,
                        cutout: Any = lambda document, field: document[field]) -> None:
    """Each cutout of ``documents`` names a file of ``root`` that astropy opens as an image."""
    from astropy.io import fits

    names = set()
    for document in documents:
        ident = document.get("candid") or document["diaSourceId"]
        for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            name = cutout(document, field)
            assert name == f"{ident}.{field}.fits"
            with fits.open(root / name) as hdus:
                assert hdus[0].data.ndim == 2 and hdus[0].header["SIMPLE"]
            names.add(name)
    assert sorted(p.name for p in root.iterdir()) == sorted(names)


def confluent_frames(secure_broker: Any, topic: str, count: int) -> list[bytes]:
    consumer = Consumer({**secure_broker.client("admin"), "group.id": "frames",
                         "auto.offset.reset": "earliest", "log_level": 0})
    consumer.subscribe([topic])
    frames: list[bytes] = []
    try:
        while len(frames) < count:
            record = consumer.poll(10)
            assert record is not None, f"only {len(frames)} of {count} records in {topic}"
            frames.append(record.value())
    finally:
        consumer.close()
    return frames


@pytest.mark.kafka
@pytest.mark.parametrize("schema_id", [1000, 1100])
def test_rubin_alerts_of_the_official_schemas_round_trip_by_id(secure_broker, rubin_env,
                                                               schema_registry, tmp_path,
                                                               schema_id):
    tree = RubinSchemaTree.from_package()
    if tree is None:
        pytest.skip("lsst-alert-packet is not installed")
    major, minor = divmod(schema_id, 100)
    definition = tree.schema_for_id(schema_id)
    assert definition is not None, f"lsst-alert-packet has no v{major}.{minor} schema"
    schema_file = tree.root / str(major) / str(minor) / f"lsst.v{major}_{minor}.alert.avsc"
    parsed = fastavro.parse_schema(definition)
    rng = random.Random(schema_id)
    # One alert with a long history (past librdkafka's default 1 MB limits), two short ones.
    alerts = [datum_from_schema(parsed, rng, items=n) for n in (3000, 2, 0)]
    ocf = tmp_path / "alerts.avro"
    with ocf.open("wb") as out:
        fastavro.writer(out, parsed, alerts)
    lines = run_kcp(["cp", str(ocf), "-", "--to", "json"], rubin_env)
    assert lines.returncode == 0, lines.stderr
    topic = secure_broker.make_topic(name=f"lsst-alerts-v{major}")
    sent = run_kcp(["produce", f"rubin:{topic}", "--to", "confluent", "--schema",
                    str(schema_file), "--schema-id", str(schema_id)], rubin_env,
                   stdin=lines.stdout)
    assert sent.returncode == 0, sent.stderr
    frames = confluent_frames(secure_broker, topic, 3)
    assert {frame[:5] for frame in frames} == {b"\x00" + schema_id.to_bytes(4, "big")}
    assert len(frames[0]) > 1 << 20

    got = run_kcp(["consume", f"rubin:{topic}", "-g", "night"], rubin_env)  # no --schema
    assert got.returncode == 0, got.stderr
    assert list(json_lines(got.stdout)) == list(json_lines(lines.stdout))
    folder = tmp_path / "cutouts"
    cutouts = run_kcp(["consume", f"rubin:{topic}", "--bytes", f"file:{folder}"], rubin_env)
    assert cutouts.returncode == 0, cutouts.stderr
    assert_cutout_files(list(json_lines(cutouts.stdout)), folder)

    # An id the package does not know comes from the profile's registry.
    schema_registry.schemas[REGISTRY_ONLY_ID] = json.dumps(definition)
    other = f"{topic}-registry"
    secure_broker.make_topic(name=other)
    first_line = lines.stdout.splitlines()[1] + b"\n"
    sent = run_kcp(["produce", f"rubin:{other}", "--to", "confluent", "--schema",
                    str(schema_file), "--schema-id", str(REGISTRY_ONLY_ID)], rubin_env,
                   stdin=first_line)
    assert sent.returncode == 0, sent.stderr
    got = run_kcp(["consume", f"rubin:{other}"], rubin_env)
    assert got.returncode == 0, got.stderr
    assert list(json_lines(got.stdout)) == list(json_lines(first_line))
    assert schema_registry.hits == [f"/schemas/ids/{REGISTRY_ONLY_ID}"]


def test_ztf_cutouts_as_files_next_to_the_json(tmp_path):
    """ZTF's stamps are gzip FITS: the files are the FITS inside, in the JSON by name."""
    from kcp.synth import write_night

    env = kcp_env(None, tmp_path)
    night = tmp_path / "night.avro"
    write_night(night, 4, seed=3)
    got = run_kcp(["cp", str(night), str(tmp_path / "night.jsonl"), "--bytes",
                   f"file:{tmp_path / 'stamps'}"], env)
    assert got.returncode == 0, got.stderr
    documents = list(json_lines((tmp_path / "night.jsonl").read_bytes()))
    assert len(documents) == 4
    assert_cutout_files(documents, tmp_path / "stamps",
                        lambda document, field: document[field]["stampData"])


# -- GCN Kafka: OIDC client credentials ---------------------------------------------------------

GCN_SECRET_ENV = "KCP_TEST_GCN_SECRET"


@pytest.fixture
def gcn_env(oauth_broker: Any, tmp_path: Path) -> dict[str, str]:
    """Config with the documented `gcn` profile, pointed at the OAuth test broker: `gcn` (the
    secret in a file), `gcn_env` (in the environment), `gcn_short` (10 s tokens) and
    `gcn_wrong` (a wrong secret)."""
    provider = oauth_broker.provider
    (first, first_secret), (second, second_secret), (third, third_secret) = (
        provider.clients.items())
    provider.lifetimes[third] = 10
    documented = documented_profile("gcn")
    assert documented["sasl.oauthbearer.method"] == "oidc"

    def profile(client: str, **secret: str) -> dict[str, Any]:
        entries = {key: value for key, value in documented.items()
                   if not key.startswith("client_secret")}
        entries.update({"bootstrap": oauth_broker.bootstrap,
                        "sasl.oauthbearer.client.id": client,
                        "sasl.oauthbearer.token.endpoint.url": provider.token_url,
                        "ssl.ca.location": str(oauth_broker.ca), **secret})
        return entries

    def secret_file(name: str, secret: str) -> str:
        path = tmp_path / name
        path.write_text(secret + "\n")
        path.chmod(0o600)
        return str(path)

    env = kcp_env(None, tmp_path)
    env.pop("KCP_BROKER", None)
    env[GCN_SECRET_ENV] = second_secret
    env["KCP_CONFIG"] = str(write_config(tmp_path / "config.toml", {
        "gcn": profile(first, client_secret_file=secret_file("gcn.secret", first_secret)),
        "gcn_env": profile(second, client_secret_env=GCN_SECRET_ENV),
        "gcn_short": profile(third, client_secret_file=secret_file("short", third_secret)),
        "gcn_wrong": profile(first, client_secret_file=secret_file("wrong", "not-the-secret")),
    }))
    return env


def gcn_notices(oauth_broker: Any, topic: str, numbers: range) -> None:
    """JSON notices like GCN's (each with its $schema), written through the PLAINTEXT side."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": oauth_broker.broker.bootstrap, "log_level": 0})
    for n in numbers:
        producer.produce(topic, orjson.dumps({
            "$schema": "https://gcn.nasa.gov/schema/v4.0.0/gcn/notices/core/Alert.schema.json",
            "trigger_number": n, "ra": 10.0 + n, "dec": -5.0}))
    assert producer.flush(30) == 0


@pytest.mark.kafka
def test_gcn_profile_reads_with_oidc_client_credentials(oauth_broker, gcn_env):
    topic = oauth_broker.make_topic()
    gcn_notices(oauth_broker, topic, range(3))
    for alias in ("gcn", "gcn_env"):
        got = run_kcp(["consume", f"{alias}:{topic}", "--where", "trigger_number >= 1"],
                      gcn_env, timeout=60)
        assert got.returncode == 0, got.stderr
        assert [d["trigger_number"] for d in json_lines(got.stdout)] == [1, 2]
    secrets = list(oauth_broker.provider.clients.values())
    runs = [["consume", f"gcn:{topic}", "-c", "1", "--debug", "-X", "debug=conf,security"],
            ["consume", f"gcn_wrong:{topic}", "--debug"], ["config", "show"]]
    for args in runs:
        result = run_kcp(args, gcn_env, timeout=60)
        for secret in secrets:
            assert secret.encode() not in result.stdout + result.stderr, args


@pytest.mark.kafka
def test_gcn_wrong_secret_is_one_line_and_exit_4_within_10s(oauth_broker, gcn_env):
    topic = oauth_broker.make_topic()
    refused_before = oauth_broker.provider.refused
    started = time.monotonic()
    result = run_kcp(["consume", f"gcn_wrong:{topic}"], gcn_env, timeout=60)
    seconds = time.monotonic() - started
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 4, result.stderr
    assert len(lines) == 1 and lines[0].startswith("kcp: "), result.stderr
    assert "gcn_wrong" in lines[0] and seconds < 10, (lines, seconds)
    assert "invalid_client" in lines[0] and "client secret" in lines[0], lines
    assert oauth_broker.provider.refused > refused_before  # refused by the token endpoint


@pytest.mark.kafka
def test_gcn_token_expiring_mid_read_is_renewed(oauth_broker, gcn_env):
    """10 s tokens, a broker that makes connections re-authenticate every 5 s: a follower
    reading for 20 s gets every notice from the same process, on tokens fetched anew."""
    topic = oauth_broker.make_topic()
    client = next(c for c, s in oauth_broker.provider.lifetimes.items() if s == 10)
    reader = subprocess.Popen([KCP, "consume", f"gcn_short:{topic}", "-f"], env=gcn_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = []
        for n in range(8):
            gcn_notices(oauth_broker, topic, range(n, n + 1))
            line = reader.stdout.readline()
            assert line, reader.stderr.read()
            seen.append(orjson.loads(line)["trigger_number"])
            time.sleep(2.5)
        assert reader.poll() is None
    finally:
        reader.terminate()
        _, stderr = reader.communicate(timeout=20)
    assert seen == list(range(8))
    assert oauth_broker.provider.issued[client] >= 3, oauth_broker.provider.issued
    assert b"Traceback" not in stderr


# -- --heartbeat: a stream that falls silent ends the read --------------------------------------

@pytest.mark.kafka
def test_a_silent_heartbeat_topic_ends_a_follower_with_exit_4(kafka_bootstrap, make_topic,
                                                            tmp_path):
    from confluent_kafka import Producer

    data, heartbeat = make_topic(), make_topic()
    env = kcp_env(kafka_bootstrap, tmp_path)
    absent = run_kcp(["consume", data, "-f", "--heartbeat", "no_such_heartbeat"], env)
    assert absent.returncode == 4 and b"no_such_heartbeat" in absent.stderr, absent.stderr
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    reader = subprocess.Popen([KCP, "consume", data, "-f", "--heartbeat", heartbeat,
                               "--heartbeat-timeout", "3"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for n in range(12):  # beats every 0.5 s for 6 s: longer than the timeout
            producer.produce(heartbeat, b'{"alive": true}')
            if n == 4:
                producer.produce(data, b'{"n": 1}')
            producer.flush(10)
            time.sleep(0.5)
        assert reader.poll() is None, reader.stderr.read()
        status, seconds, stdout, stderr = wait_timed(reader, time.monotonic())
    finally:
        reader.kill()
    assert status == 4, stderr
    assert 2.5 < seconds < 8, seconds
    assert list(json_lines(stdout)) == [{"n": 1}]
    (line,) = stderr.decode().splitlines()
    assert re.fullmatch(f"kcp: heartbeat topic {heartbeat} on broker {kafka_bootstrap} silent "
                        r"for \d+s \(--heartbeat-timeout 3\)", line), line
