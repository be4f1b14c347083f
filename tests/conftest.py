"""Shared pytest configuration and fixtures for kcp's tests.

Sections:
    * Kafka broker - a real single-node KRaft broker shared by the whole session
      (tests/kafka/broker.py), or an external one named by KCP_TEST_BOOTSTRAP.
    * Second broker - an independent cluster, for copies between clusters (second_kafka_bootstrap).
    * Secure broker - another one with SASL (SCRAM-SHA-512, PLAIN), TLS and ACLs, started
      only when a test asks for `secure_broker` (the security tests), so the rest stay fast.
    * OAuth broker - a third one taking OAUTHBEARER JWTs (GCN Kafka's login), with the OIDC
      token and JWKS endpoints served on loopback; started only for `oauth_broker`.
"""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


# =====================================================================================
# Kafka broker
# =====================================================================================

KAFKA_LIBS_DIR = REPO_ROOT / ".cache" / "kafka-libs"
KAFKA_BOOTSTRAP_ENV = "KCP_TEST_BOOTSTRAP"
# Names of the fixtures that put a test on the broker; used to decide whose failures
# deserve the broker log.
_KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "kafka_broker"})


def _load_broker_module() -> ModuleType:
    # Loaded by path: tests/ is not a package, and a bare `import kafka...` could pick
    # up the unrelated kafka-python distribution if it happens to be installed.
    name = "kcp_test_kafka_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


KafkaBroker = _load_broker_module().KafkaBroker

_BROKER_KEY = pytest.StashKey["KafkaBroker | None"]()
_SECURE_BROKER_KEY = pytest.StashKey["KafkaBroker | None"]()
_OAUTH_BROKER_KEY = pytest.StashKey["KafkaBroker | None"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kafka: needs the real Kafka broker started by the session fixture"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests reaching the broker through a fixture count as `kafka` even if their
    # author forgot the marker, so `-m "not kafka"` really avoids the JVM.
    for item in items:
        if not _KAFKA_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # rep_setup / rep_call / rep_teardown let fixtures see how their test went.
    setattr(item, f"rep_{report.when}", report)
    if report.failed and report.when in ("setup", "call"):
        broker = item.config.stash.get(_BROKER_KEY, None)
        uses_kafka = not _KAFKA_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        if broker is not None and uses_kafka:
            # Attached to the failing report itself, so it prints right under the
            # traceback instead of in a separate teardown section.
            report.sections.append(("kafka broker log (tail)", broker.log_tail(200)))
        secure = item.config.stash.get(_SECURE_BROKER_KEY, None)
        if secure is not None and "secure_broker" in getattr(item, "fixturenames", ()):
            report.sections.append(("secure kafka broker log (tail)", secure.log_tail(200)))
        oauth = item.config.stash.get(_OAUTH_BROKER_KEY, None)
        if oauth is not None and "oauth_broker" in getattr(item, "fixturenames", ()):
            report.sections.append(("oauth kafka broker log (tail)", oauth.log_tail(200)))
    return report


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[KafkaBroker | None]:
    """The session's KafkaBroker, or None when KCP_TEST_BOOTSTRAP names an external one.

    Fault-injection tests may kill() and restart() it; see _kafka_broker_revived.
    """
    if os.environ.get(KAFKA_BOOTSTRAP_ENV):
        request.config.stash[_BROKER_KEY] = None
        yield None
        return
    if not KAFKA_LIBS_DIR.is_dir() or not any(KAFKA_LIBS_DIR.glob("*.jar")):
        pytest.fail(
            f"no Kafka jars in {KAFKA_LIBS_DIR}: run `make kafka-libs` (or just `make test`),"
            f" or point {KAFKA_BOOTSTRAP_ENV}=host:port at a running broker",
            pytrace=False,
        )
    broker = _started(KafkaBroker(KAFKA_LIBS_DIR), "test Kafka broker")
    request.config.stash[_BROKER_KEY] = broker
    try:
        yield broker
    finally:
        broker.stop()


def _started(broker: KafkaBroker, what: str) -> KafkaBroker:
    try:
        broker.start()
    except RuntimeError as exc:
        broker.stop()
        pytest.fail(f"could not start the {what}: {exc}", pytrace=False)
    return broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    """bootstrap.servers of the session broker ("127.0.0.1:PORT")."""
    if kafka_broker is None:
        return os.environ[KAFKA_BOOTSTRAP_ENV]
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def second_kafka_bootstrap() -> Iterator[str]:
    """bootstrap.servers of a second, independent KRaft broker: a cluster of its own, for
    copies between clusters. Started only for the tests that ask for it."""
    if not KAFKA_LIBS_DIR.is_dir() or not any(KAFKA_LIBS_DIR.glob("*.jar")):
        pytest.skip(f"no Kafka jars in {KAFKA_LIBS_DIR} for a second broker")
    broker = _started(KafkaBroker(KAFKA_LIBS_DIR), "second test Kafka broker")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def _kafka_broker_revived(request: pytest.FixtureRequest) -> Iterator[None]:
    # A fault test that dies between kill() and restart() would otherwise leave every
    # later Kafka test failing for a reason unrelated to it.
    yield
    if _KAFKA_FIXTURES.isdisjoint(request.fixturenames):
        return
    broker = request.config.stash.get(_BROKER_KEY, None)
    if broker is not None and not broker.running:
        broker.restart()


@pytest.fixture
def topic() -> str:
    """A fresh topic name; the topic itself is left to the test (or to auto-create)."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: make_topic(partitions=1, name=None) creates a topic and waits for it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def make(partitions: int = 1, name: str | None = None, timeout: float = 30.0) -> str:
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
        )
        futures[name].result(timeout=timeout)
        # create_topics returns once the controller commits the topic; the broker may
        # still lack partition leaders, which a produce right away would trip over.
        deadline = time.monotonic() + timeout
        while True:
            meta = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready after {timeout} s")
            time.sleep(0.05)

    return make


# =====================================================================================
# Secure broker: SASL_PLAINTEXT and SASL_SSL listeners, SCRAM-SHA-512 and PLAIN users,
# TLS from a CA made here, and ACLs enforced by KRaft's StandardAuthorizer.
# =====================================================================================

# Users and what they may do. Topics whose names start with SECURE_PREFIX are the authorised
# ones; "alice" and "bob" may use the groups whose names start with their own name and a dash,
# as Rubin's ACLs allow; "mallory" has no ACL at all; "carol" may read topics but join no group;
# "dave" gets (and loses) ACLs inside a test.
SECURE_PREFIX = "sec_"
SCRAM_USERS = ("admin", "alice", "carol", "dave", "mallory")
PLAIN_USERS = ("admin", "bob")


@dataclass
class SecureBroker:
    """The secure test broker and what a client needs to reach it."""

    broker: KafkaBroker
    ca: Path
    other_ca: Path
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def sasl_plaintext(self) -> str:
        return self.broker.listener_bootstrap("SASL")

    @property
    def sasl_ssl(self) -> str:
        return self.broker.listener_bootstrap("SASLSSL")

    def client(self, user: str, mechanism: str = "SCRAM-SHA-512", tls: bool = False,
               password: str | None = None) -> dict[str, str]:
        """librdkafka properties for ``user`` (its own password unless one is given)."""
        properties = {
            "bootstrap.servers": self.sasl_ssl if tls else self.sasl_plaintext,
            "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": self.passwords[user] if password is None else password,
        }
        if tls:
            properties["ssl.ca.location"] = str(self.ca)
        return properties

    def make_topic(self, partitions: int = 1, name: str | None = None) -> str:
        """A new topic, created by the admin (a super user), with leaders elected."""
        from confluent_kafka.admin import AdminClient, NewTopic

        name = name or f"{SECURE_PREFIX}{uuid.uuid4().hex[:10]}"
        admin = AdminClient({**self.client("admin"), "log_level": 0})
        admin.create_topics([NewTopic(name, num_partitions=partitions,
                                      replication_factor=1)])[name].result(30)
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(topic=name, timeout=10).topics.get(name)
            if (meta is not None and meta.error is None and len(meta.partitions) == partitions
                    and all(p.leader >= 0 for p in meta.partitions.values())):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready")
            time.sleep(0.05)


def _secure_properties(tls: dict[str, Path], passwords: dict[str, str]) -> dict[str, object]:
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             + " ".join(f'user_{u}="{passwords[u]}"' for u in PLAIN_USERS) + ";")
    properties: dict[str, object] = {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the broker itself on its PLAINTEXT and CONTROLLER listeners.
        "super.users": "User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "listener.name.saslssl.ssl.keystore.type": "PEM",
        "listener.name.saslssl.ssl.keystore.location": str(tls["keystore"]),
    }
    for listener in ("sasl", "saslssl"):
        properties[f"listener.name.{listener}.sasl.enabled.mechanisms"] = "SCRAM-SHA-512,PLAIN"
        properties[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = scram
        properties[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain
    return properties


def _grant_acls(secure: SecureBroker) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    def allow(kind: ResourceType, user: str, operation: AclOperation,
              prefix: str = SECURE_PREFIX) -> AclBinding:
        return AclBinding(kind, prefix, ResourcePatternType.PREFIXED, f"User:{user}",
                          "*", operation, AclPermissionType.ALLOW)

    bindings = [allow(ResourceType.TOPIC, user, AclOperation.ALL) for user in ("alice", "bob")]
    bindings += [allow(ResourceType.GROUP, user, AclOperation.READ, prefix=f"{user}-")
                 for user in ("alice", "bob")]
    bindings += [allow(ResourceType.TOPIC, "carol", AclOperation.READ)]
    # Rubin's topic names, for the documented `rubin` profile (tests/test_streams.py).
    bindings += [allow(ResourceType.TOPIC, "alice", AclOperation.ALL, prefix="lsst-alerts-")]
    admin = AdminClient({**secure.client("admin"), "log_level": 0})
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result()


@pytest.fixture(scope="session")
def secure_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[SecureBroker]:
    """A second broker: SASL_PLAINTEXT and SASL_SSL (SCRAM-SHA-512 and PLAIN), ACLs enforced.

    Its PLAINTEXT listener (the broker's own, for inter-broker traffic and the harness probe)
    is a super user; clients under test use the SASL listeners.
    """
    if not KAFKA_LIBS_DIR.is_dir() or not any(KAFKA_LIBS_DIR.glob("*.jar")):
        pytest.skip(f"no Kafka jars in {KAFKA_LIBS_DIR} for the secure broker")
    folder = tmp_path_factory.mktemp("secure-broker")
    tls = _load_broker_module().make_tls_files(folder / "tls")
    passwords = {user: f"pw-{user}-{secrets.token_hex(8)}"
                 for user in (*SCRAM_USERS, *PLAIN_USERS)}
    broker = _started(KafkaBroker(
        KAFKA_LIBS_DIR,
        listeners={"SASL": "SASL_PLAINTEXT", "SASLSSL": "SASL_SSL"},
        scram_users=[("SCRAM-SHA-512", user, passwords[user]) for user in SCRAM_USERS],
        extra_properties=_secure_properties(tls, passwords),
    ), "secure test broker")
    request.config.stash[_SECURE_BROKER_KEY] = broker
    secure = SecureBroker(broker, tls["ca"], tls["other_ca"], passwords)
    try:
        _grant_acls(secure)
        yield secure
    finally:
        broker.stop()


# =====================================================================================
# OAuth broker: SASL_SSL with OAUTHBEARER, as GCN Kafka. Clients log in with OIDC client
# credentials at a token endpoint; the broker validates their JWTs against a JWKS endpoint.
# Both endpoints are an identity provider served here on loopback.
# =====================================================================================

OIDC_AUDIENCE = "kcp-test-kafka"
_OIDC_KEY_ID = "kcp-test-key"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """An OAuth 2.0 client-credentials token endpoint and the JWKS its tokens are signed
    with (RS256), on 127.0.0.1. ``lifetimes`` sets a client's token lifetime (default 300 s);
    ``issued`` counts the tokens each client got."""

    def __init__(self, clients: dict[str, str]) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.clients = clients
        self.lifetimes: dict[str, int] = {}
        self.issued: dict[str, int] = {}
        self.refused = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth2/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def close(self) -> None:
        self._server.shutdown()

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": _OIDC_KEY_ID,
                          "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8,
                                                          "big")),
                          "e": _b64url(numbers.e.to_bytes(3, "big"))}]}

    def token(self, client: str) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        lifetime = self.lifetimes.get(client, 300)
        now = int(time.time())
        claims = {"sub": client, "iss": self.url, "aud": OIDC_AUDIENCE, "iat": now,
                  "exp": now + lifetime, "scope": "kafka"}
        header = {"alg": "RS256", "typ": "JWT", "kid": _OIDC_KEY_ID}
        signed = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = self._key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.issued[client] = self.issued.get(client, 0) + 1
        return {"access_token": f"{signed}.{_b64url(signature)}", "token_type": "Bearer",
                "expires_in": lifetime}

    def _credentials(self, headers: Any, body: bytes) -> tuple[str, str]:
        """The client id and secret of a token request: HTTP Basic, else the form."""
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            client, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            return urllib.parse.unquote_plus(client), urllib.parse.unquote_plus(secret)
        form = urllib.parse.parse_qs(body.decode())
        return form.get("client_id", [""])[0], form.get("client_secret", [""])[0]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/.well-known/jwks.json":
                    self._answer(200, provider.jwks())
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                client, secret = provider._credentials(self.headers, body)
                if self.path != "/oauth2/token":
                    self._answer(404, {"error": "not_found"})
                elif provider.clients.get(client) != secret or not secret:
                    provider.refused += 1
                    self._answer(401, {"error": "invalid_client"})
                else:
                    self._answer(200, provider.token(client))

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@dataclass
class OAuthBroker:
    """The OAuth test broker, its identity provider and what a client needs to reach them."""

    broker: KafkaBroker
    provider: IdentityProvider
    ca: Path

    @property
    def bootstrap(self) -> str:
        return self.broker.listener_bootstrap("OAUTH")

    def make_topic(self, partitions: int = 1) -> str:
        """A new topic, made through the broker's own PLAINTEXT listener."""
        from confluent_kafka.admin import AdminClient, NewTopic

        name = f"gcn.notices.t{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": self.broker.bootstrap, "log_level": 0})
        admin.create_topics([NewTopic(name, num_partitions=partitions,
                                      replication_factor=1)])[name].result(30)
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(topic=name, timeout=10).topics.get(name)
            if (meta is not None and meta.error is None
                    and all(p.leader >= 0 for p in meta.partitions.values())):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def oauth_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[OAuthBroker]:
    """A broker whose SASL_SSL listener takes OAUTHBEARER JWTs only, validated by Kafka's
    OAuthBearerValidatorCallbackHandler against the identity provider's JWKS; connections
    re-authenticate every 5 s, so an expired token that is not renewed ends the session."""
    if not KAFKA_LIBS_DIR.is_dir() or not any(KAFKA_LIBS_DIR.glob("*.jar")):
        pytest.skip(f"no Kafka jars in {KAFKA_LIBS_DIR} for the OAuth broker")
    pytest.importorskip("cryptography")
    folder = tmp_path_factory.mktemp("oauth-broker")
    tls = _load_broker_module().make_tls_files(folder / "tls")
    provider = IdentityProvider({f"kcp-client-{i}": secrets.token_urlsafe(24)
                                 for i in range(3)})
    listener = "listener.name.oauth"
    broker = KafkaBroker(
        KAFKA_LIBS_DIR,
        listeners={"OAUTH": "SASL_SSL"},
        extra_properties={
            f"{listener}.ssl.keystore.type": "PEM",
            f"{listener}.ssl.keystore.location": str(tls["keystore"]),
            f"{listener}.sasl.enabled.mechanisms": "OAUTHBEARER",
            f"{listener}.oauthbearer.sasl.jaas.config":
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            f"{listener}.oauthbearer.sasl.server.callback.handler.class":
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
            "sasl.oauthbearer.jwks.endpoint.url": provider.jwks_url,
            "sasl.oauthbearer.expected.audience": OIDC_AUDIENCE,
            "sasl.oauthbearer.expected.issuer": provider.url,
            "sasl.oauthbearer.clock.skew.seconds": 1,
            "connections.max.reauth.ms": 5000,
        },
        # Kafka 4 contacts only the OAuth URLs this system property allows.
        jvm_options=["-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="
                     f"{provider.jwks_url},{provider.token_url}"],
    )
    try:
        broker.start()
    except RuntimeError as exc:
        broker.stop()
        provider.close()
        pytest.fail(f"could not start the OAuth test broker: {exc}", pytrace=False)
    request.config.stash[_OAUTH_BROKER_KEY] = broker
    try:
        yield OAuthBroker(broker, provider, tls["ca"])
    finally:
        broker.stop()
        provider.close()


# =====================================================================================
# The CLI in-process
# =====================================================================================


@pytest.fixture
def kcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run kcp in-process (click's CliRunner) in a temp folder, away from any user config:
    ``kcp("cp", "a.avro", "b.jsonl", stdin=b"...")`` returns the click Result."""
    from click.testing import CliRunner

    from kcp.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("KCP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, stdin: bytes | None = None) -> Any:
        return runner.invoke(main, list(args), input=stdin, catch_exceptions=False,
                             prog_name="kcp")

    return invoke
