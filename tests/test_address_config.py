"""The address grammar and the configuration file (no I/O beyond tmp files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcp.address import parse_address
from kcp.config import Config, masked
from kcp.errors import UsageError
from kcp.formats import file_extensions


@pytest.mark.parametrize("text, kind, broker, topics", [
    ("-", "stdio", None, ()),
    ("night.avro", "file", None, ()),
    ("./night", "file", None, ()),
    ("alerts/*.avro", "file", None, ()),
    ("night.tar.gz", "file", None, ()),
    ("ztf_20180725_programid1", "kafka", None, ("ztf_20180725_programid1",)),
    ("ztf:^ztf_2018072.*", "kafka", "ztf", ("^ztf_2018072.*",)),
    ("localhost:9092:alerts", "kafka", "localhost:9092", ("alerts",)),
    ("broker.example.org:alerts,more", "kafka", "broker.example.org", ("alerts", "more")),
    ("local:", "kafka", "local", ()),
    ("kafka://h1:9092,h2/t1,t2", "kafka", "h1:9092,h2", ("t1", "t2")),
])
def test_addresses(text, kind, broker, topics):
    address = parse_address(text, {"ztf", "local"}, file_extensions())
    assert (address.kind, address.broker, address.topics) == (kind, broker, topics)


def test_group_in_a_kafka_url():
    assert parse_address("kafka://mirror@h:1/t").group == "mirror"


@pytest.mark.parametrize("text, message", [
    ("bad topic!", "not a valid Kafka topic name"),
    ("kafka:///t", "no broker in the URL"),
    ("ztf:^(", "bad topic pattern"),
    ("", "empty address"),
])
def test_bad_addresses_say_why(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_address(text, (), file_extensions())


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_broker_precedence_environment_then_file_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv("KCP_BROKER", raising=False)
    assert Config().broker(None).name == "localhost:9092"
    config = Config.load(write_config(tmp_path, 'default_broker = "filehost:9092"\n'))
    assert config.broker(None).properties["bootstrap.servers"] == "filehost:9092"
    monkeypatch.setenv("KCP_BROKER", "envhost:9092")
    assert config.broker(None).properties["bootstrap.servers"] == "envhost:9092"
    assert config.broker("cli:1").properties["bootstrap.servers"] == "cli:1"


def test_alias_with_properties_and_secret_sources(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = Config.load(write_config(tmp_path, f"""
default_broker = "ztf"
[brokers.ztf]
bootstrap = "partnership.example.org:9092"
"security.protocol" = "SASL_SSL"
"sasl.username" = "alice"
password_file = "{secret}"
[brokers.rubin]
bootstrap = "rubin.example.org:9092"
password_env = "RUBIN_PASSWORD"
"""))
    profile = config.broker(None)
    name, properties = profile.name, profile.properties
    assert name == "ztf"
    assert properties == {"bootstrap.servers": "partnership.example.org:9092",
                          "security.protocol": "SASL_SSL", "sasl.username": "alice",
                          "sasl.password": "s3cret"}
    assert masked(properties)["sasl.password"] == "****"
    with pytest.raises(UsageError, match="RUBIN_PASSWORD is not set"):
        config.broker("rubin")
    monkeypatch.setenv("RUBIN_PASSWORD", "pw")
    assert config.broker("rubin").properties["sasl.password"] == "pw"


def test_broken_config_file_is_a_usage_error(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="not valid TOML"):
        Config.load(write_config(tmp_path, "default_broker = \n"))
    monkeypatch.setenv("KCP_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(UsageError, match="does not exist"):
        Config.load()


def test_group_prefix_and_registry_are_kcp_settings_not_kafka_properties(tmp_path):
    config = Config.load(write_config(tmp_path, """
[brokers.rubin]
bootstrap = "usdf-alert-stream-dev.lsst.cloud:9094"
"sasl.username" = "jdoe"
registry = "https://usdf-alert-schemas-dev.slac.stanford.edu"
[brokers.shared]
bootstrap = "kafka.example.org:9092"
"sasl.username" = "team"
group_prefix = "lab."
[brokers.open]
bootstrap = "localhost:9092"
"""))
    rubin = config.broker("rubin")
    assert "registry" not in rubin.properties and "group_prefix" not in rubin.properties
    assert rubin.registry == "https://usdf-alert-schemas-dev.slac.stanford.edu"
    assert rubin.group_id("night") == "jdoe-night"
    assert rubin.group_id("jdoe-night") == "jdoe-night"  # not doubled
    assert config.broker("shared").group_id("night") == "lab.night"
    assert config.broker("open").group_id("night") == "night"
    assert config.broker("host:1").group_id("night") == "night"
    shown = config.effective()["brokers"]
    assert [shown[name]["group_prefix"] for name in ("rubin", "shared", "open")] == [
        "jdoe-", "lab.", ""]


def test_secrets_are_masked_by_what_they_are_not_only_by_their_key():
    shown = masked({
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----",
        "sasl.oauthbearer.config": "clientId=kcp clientSecret=hunter2 scope=read",
        "some.custom.setting": "token=abc123",
        "schema.registry.url": "https://alice:hunter2@registry.example.org/",
        "sasl.username": "alice",
    })
    assert shown == {"ssl.key.pem": "****", "sasl.oauthbearer.config": "****",
                     "some.custom.setting": "****",
                     "schema.registry.url": "https://registry.example.org/",
                     "sasl.username": "alice"}


def test_no_url_credentials_in_any_error():
    error = UsageError("registry https://alice:hunter2@registry.example.org:8081/ unreachable")
    assert str(error) == "registry https://registry.example.org:8081/ unreachable"


@pytest.mark.parametrize("text, message", [
    ("default_broker = 5\n", "default_broker must be a string"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),
    ("[brokers]\nztf = 5\n", "table of broker aliases"),
])
def test_config_oddities_are_usage_errors(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        Config.load(write_config(tmp_path, text))


def test_a_password_file_that_is_not_text_is_a_usage_error(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xff\xfe\x00pw")
    config = Config.load(write_config(tmp_path, f'[brokers.b]\nbootstrap = "h:1"\n'
                                                f'password_file = "{secret}"\n'))
    with pytest.raises(UsageError, match="not UTF-8 text"):
        config.broker("b")
