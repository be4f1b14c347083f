"""Shared pytest configuration and fixtures for kcp's tests.

Sections:
    * Kafka broker - a real single-node KRaft broker shared by the whole session
      (tests/kafka/broker.py), or an external one named by KCP_TEST_BOOTSTRAP.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import ModuleType

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
    broker = KafkaBroker(KAFKA_LIBS_DIR)
    try:
        broker.start()
    except RuntimeError as exc:
        broker.stop()
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    request.config.stash[_BROKER_KEY] = broker
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    """bootstrap.servers of the session broker ("127.0.0.1:PORT")."""
    if kafka_broker is None:
        return os.environ[KAFKA_BOOTSTRAP_ENV]
    return kafka_broker.bootstrap


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
