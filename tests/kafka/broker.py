"""A real single-node Apache Kafka broker (KRaft, no ZooKeeper, no Docker) for tests.

The broker and its controller share one JVM started straight from the jars that
``make kafka-libs`` collects in ``.cache/kafka-libs``. Only the standard library is
needed; confluent_kafka is used for the readiness probe when it is importable.

Run it in the foreground for manual experiments::

    python tests/kafka/broker.py [--port 9092] [--libs DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / "kafka-libs"

# Small heap, serial GC and C1 only: the broker idles through tests on a 2-core box,
# so start-up time matters far more than peak throughput.
JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Seconds between SIGTERM and SIGKILL in stop(); a clean single-node shutdown takes
# well under a second, so anything longer means the JVM is stuck.
STOP_GRACE_SECONDS = 5.0

# Kafka 4.x logs through log4j2 (bin/kafka-run-class.sh passes
# -Dlog4j2.configurationFile). Everything goes to stdout, which the harness redirects
# into broker.log, so JVM crashes and log lines end up interleaved in one file.
LOG4J2_PROPERTIES = """\
status = warn
name = kcp-test-broker
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.target = SYSTEM_OUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# Each start dumps all ~340 broker settings six times; server.properties says enough.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
# The broker's internal clients repeat their own config dumps and connection chatter.
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.reqchannel.name = kafka.network.RequestChannel$
logger.reqchannel.level = WARN
logger.loader.name = org.apache.kafka.image.loader
logger.loader.level = WARN
"""

_LIVE_BROKERS: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()


def _stop_live_brokers() -> None:
    # A JVM outliving the interpreter would hold its ports until someone notices.
    for broker in list(_LIVE_BROKERS):
        broker.stop()


atexit.register(_stop_live_brokers)


def _parent_death_signal_setter() -> Callable[[], None] | None:
    """Return a preexec_fn that makes the JVM die with us (Linux only), else None.

    atexit does not run when pytest itself is SIGKILLed; PR_SET_PDEATHSIG covers that.
    libc is loaded here, in the parent, because dlopen is unsafe between fork and exec.
    Caveat: the signal fires when the *thread* that forked exits, so start the broker
    from a long-lived thread (the main thread in pytest and in script mode).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return preexec


def free_port(exclude: set[int] | None = None) -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    exclude = exclude or set()
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def random_cluster_id() -> str:
    """Return a cluster id in the format ``kafka-storage random-uuid`` prints.

    Doing it in Python saves a ~0.7 s JVM start. Kafka's Uuid.randomUuid also rejects
    ids whose text starts with '-' (they read as command-line flags); the all-zero and
    metadata-topic ids it reserves cannot come out of uuid4 thanks to its version bits.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def port_is_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class KafkaBroker:
    """One KRaft broker+controller JVM on 127.0.0.1 with its own data directory."""

    def __init__(
        self,
        libs_dir: Path,
        port: int | None = None,
        workdir: Path | None = None,
        extra_properties: dict[str, object] | None = None,
        listeners: dict[str, str] | None = None,
        scram_users: list[tuple[str, str, str]] | None = None,
        jvm_options: list[str] | None = None,
    ) -> None:
        """``listeners``: extra listeners beside PLAINTEXT, NAME -> security protocol (e.g.
        {"SASL": "SASL_PLAINTEXT"}), each on a port of its own picked at start; configure them
        with ``listener.name.<name>.*`` entries in ``extra_properties``.
        ``scram_users``: (mechanism, name, password) credentials written at format time.
        ``jvm_options``: more JVM options, e.g. system properties (``-Dname=value``)."""
        self.libs_dir = Path(libs_dir)
        self.port = port
        self.controller_port: int | None = None
        self.extra_properties = dict(extra_properties or {})
        self.listeners = dict(listeners or {})
        self.listener_ports: dict[str, int] = {}
        self.scram_users = list(scram_users or [])
        self.jvm_options = list(jvm_options or [])
        self.last_start_seconds: float | None = None
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public API -----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker ports are picked by start(); call it first")
        return f"{HOST}:{self.port}"

    def listener_bootstrap(self, name: str) -> str:
        """bootstrap.servers of the extra listener ``name``."""
        if name not in self.listener_ports:
            raise RuntimeError(f"no listener {name} (listeners are given to the constructor, "
                               "their ports are picked by start())")
        return f"{HOST}:{self.listener_ports[name]}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "broker.log" if self._workdir is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 60.0) -> None:
        """Format storage on first use, launch the JVM and wait until it serves metadata.

        Raises RuntimeError (with the log tail) if the JVM exits or `timeout` passes.
        """
        if self.running:
            return
        began = time.monotonic()
        java = self._java()
        self._classpath()  # fail on missing jars before leaving a temp dir behind
        self._ensure_workdir()
        self._pick_ports()
        self._write_configs()
        if not (self._data_dir / "meta.properties").exists():
            self._format(java, began + timeout)
        self._launch(java)
        self._wait_ready(began + timeout)
        self.last_start_seconds = time.monotonic() - began

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same data directory and ports (stopping first if alive)."""
        if self._workdir is None:
            raise RuntimeError("nothing to restart: never started, or stop() removed the data")
        if self.running:
            self._terminate(STOP_GRACE_SECONDS)
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the JVM like a crash would; the data directory is kept for restart()."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; removes the temp dir it created."""
        self._terminate(STOP_GRACE_SECONDS)
        _LIVE_BROKERS.discard(self)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False

    def log_tail(self, n_lines: int = 200) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no broker log)"
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=n_lines))

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<KafkaBroker {HOST}:{self.port} {state} workdir={self._workdir}>"

    # -- internals ------------------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "data"

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home) / "bin" / "java" if java_home else None
        if candidate is not None and candidate.exists():
            return str(candidate)
        found = shutil.which("java")
        if found is None:
            raise RuntimeError("no java found (install a JRE >= 17 or set JAVA_HOME)")
        return found

    def _classpath(self) -> str:
        if not any(self.libs_dir.glob("*.jar")):
            raise RuntimeError(
                f"no Kafka jars in {self.libs_dir}; run `make kafka-libs` to fetch them"
            )
        # The JVM expands a trailing '*' itself, which keeps the command line short.
        return str(self.libs_dir / "*")

    def _ensure_workdir(self) -> None:
        if self._workdir is not None:
            return
        if self._given_workdir is not None:
            self._workdir = self._given_workdir
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="kcp-kafka-"))
            self._owns_workdir = True

    def _pick_ports(self) -> None:
        if self.controller_port is None:
            # A reused, already formatted work dir recorded its controller endpoint in
            # the KRaft voter set at format time, so that port must not change.
            self.controller_port = self._previous_controller_port()
        taken = {p for p in (self.port, self.controller_port) if p is not None}
        if self.port is None:
            self.port = free_port(taken)
            taken.add(self.port)
        if self.controller_port is None:
            self.controller_port = free_port(taken)
        taken.add(self.controller_port)
        for name in self.listeners:
            if name not in self.listener_ports:
                self.listener_ports[name] = free_port(taken | set(self.listener_ports.values()))

    def _previous_controller_port(self) -> int | None:
        assert self._workdir is not None
        props = self._workdir / "server.properties"
        if not (self._data_dir / "meta.properties").exists() or not props.exists():
            return None
        match = re.search(r"CONTROLLER://[^:,\s]+:(\d+)", props.read_text())
        return int(match.group(1)) if match else None

    def _properties(self) -> dict[str, object]:
        assert self._workdir is not None
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "listeners": (
                f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            # Kafka 4.x dynamic quorum: `format --standalone` writes this node as the
            # only voter; clients of the quorum just need somewhere to bootstrap from.
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "log.dirs": str(self._data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": "true",
            # Internal topics default to RF 3 and 50 partitions: unusable on one node.
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "share.coordinator.state.topic.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            # The cleaner allocates this up front (128 MB by default); Kafka insists on
            # strictly more than 1 MB per cleaner thread, so 1 MB exactly is refused.
            "log.cleaner.dedupe.buffer.size": 2 * 1024 * 1024,
            # After a SIGKILL the controller keeps the dead incarnation registered until
            # its session expires, and the restarted broker cannot register before that
            # (DUPLICATE_BROKER_REGISTRATION). 9 s by default; 3 s still leaves six
            # heartbeats of slack so a busy CI box does not fence the only broker.
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
            # Survey cutouts can make single alerts of several MB.
            "message.max.bytes": 10 * 1024 * 1024,
            # Tests write records stamped years ago (real 2018 alerts, fixed timestamps):
            # time-based retention would delete them in the middle of a test.
            "log.retention.ms": -1,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
        }
        for name, protocol in self.listeners.items():
            endpoint = f",{name}://{HOST}:{self.listener_ports[name]}"
            props["listeners"] = f"{props['listeners']}{endpoint}"
            props["advertised.listeners"] = f"{props['advertised.listeners']}{endpoint}"
            props["listener.security.protocol.map"] = (
                f"{props['listener.security.protocol.map']},{name}:{protocol}")
        props.update(self.extra_properties)
        return props

    def _write_configs(self) -> None:
        assert self._workdir is not None
        lines = []
        for key, value in self._properties().items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            lines.append(f"{key}={value}\n")
        (self._workdir / "server.properties").write_text("".join(lines))
        (self._workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _java_base(self, java: str) -> list[str]:
        assert self._workdir is not None
        return [
            java,
            *JVM_OPTS,
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self._workdir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
        ]

    def _format(self, java: str, deadline: float) -> None:
        assert self._workdir is not None
        cmd = [
            *self._java_base(java),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            random_cluster_id(),
            "--config",
            str(self._workdir / "server.properties"),
        ]
        for mechanism, name, password in self.scram_users:
            cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        try:
            with (self._workdir / "broker.log").open("ab") as log:
                result = subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=max(0.1, deadline - time.monotonic()),
                    check=False,
                )
        except subprocess.TimeoutExpired:
            # A half-written data dir would be mistaken for a formatted one next time.
            shutil.rmtree(self._data_dir, ignore_errors=True)
            raise RuntimeError(
                f"kafka storage format did not finish in time; log tail:\n{self.log_tail()}"
            ) from None
        if result.returncode != 0:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            raise RuntimeError(
                f"kafka storage format failed (exit {result.returncode}):\n{self.log_tail()}"
            )

    def _launch(self, java: str) -> None:
        assert self._workdir is not None
        cmd = [*self._java_base(java), "kafka.Kafka", str(self._workdir / "server.properties")]
        with (self._workdir / "broker.log").open("ab") as log:
            # A separate session keeps a terminal Ctrl-C away from the JVM, so the
            # owner decides how it goes down (stop() vs kill()).
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,
                preexec_fn=_parent_death_signal_setter(),
            )
        _LIVE_BROKERS.add(self)

    def _wait_ready(self, deadline: float) -> None:
        # The PLAINTEXT acceptor only opens once the broker is registered with and
        # unfenced by the controller, so an open port already means "almost ready";
        # a metadata round trip then proves it actually answers requests.
        assert self.port is not None
        while not port_is_open(self.port):
            self._check_alive_before(deadline)
            time.sleep(0.05)
        try:
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
        except ImportError:
            return
        # log_level 0 silences librdkafka's "connection refused" noise while probing.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

        def answers_metadata() -> bool:
            try:
                return bool(admin.list_topics(timeout=2.0).brokers)
            except KafkaException:
                return False

        def has_group_coordinator() -> bool:
            group = "kcp-harness-probe"
            try:
                admin.describe_consumer_groups([group], request_timeout=2.0)[group].result()
            except KafkaException:  # NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS...
                return False
            return True

        while not answers_metadata():
            self._check_alive_before(deadline)
            time.sleep(0.05)
        # Asking about a group makes the broker create (first start) or load (restart)
        # __consumer_offsets now. Otherwise the first consumer group of a test waits
        # ~3 s in librdkafka's coordinator back-off; polled here it takes ~0.2 s.
        while not has_group_coordinator():
            self._check_alive_before(deadline)
            time.sleep(0.05)

    def _check_alive_before(self, deadline: float) -> None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            raise RuntimeError(
                f"kafka broker exited with code {code} during start-up; "
                f"log tail:\n{self.log_tail()}"
            )
        if time.monotonic() > deadline:
            self._terminate(1.0)
            raise RuntimeError(
                f"kafka broker not ready on {self.bootstrap} in time; log tail:\n{self.log_tail()}"
            )

    def _terminate(self, grace: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_tls_files(folder: Path, hosts: tuple[str, ...] = (HOST, "localhost")
                   ) -> dict[str, Path]:
    """A throw-away certificate authority and a broker certificate it signed, made with openssl.

    Returns PEM paths: ``ca`` (the CA certificate clients trust), ``keystore`` (the broker's
    PKCS#8 key followed by its certificate: Kafka's ssl.keystore.type=PEM) and ``other_ca``
    (an unrelated CA, for "wrong CA" tests).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True,
                       timeout=60)

    for ca in ("ca", "other_ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN=kcp test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "broker.key", "-out", "broker.csr")
    names = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
    (folder / "san.ext").write_text(f"subjectAltName={names}\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.crt")
    keystore = folder / "broker-keystore.pem"
    keystore.write_bytes((folder / "broker.key").read_bytes()
                         + (folder / "broker.crt").read_bytes())
    return {"ca": folder / "ca.pem", "keystore": keystore, "other_ca": folder / "other_ca.pem"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a single-node KRaft Kafka broker.")
    parser.add_argument("--port", type=int, default=9092, help="PLAINTEXT port (9092)")
    parser.add_argument(
        "--libs", type=Path, default=DEFAULT_LIBS_DIR, help=f"Kafka jars ({DEFAULT_LIBS_DIR})"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep data here (default: temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout (s)")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    broker = KafkaBroker(args.libs, port=args.port, workdir=args.workdir)
    try:
        broker.start(timeout=args.timeout)
        print(
            f"kafka started in {broker.last_start_seconds:.1f} s, log: {broker.log_path}",
            file=sys.stderr,
        )
        print(f"broker ready on {broker.bootstrap}", file=sys.stderr, flush=True)
        while broker.running:
            time.sleep(0.5)
        print(f"broker exited on its own; log tail:\n{broker.log_tail(50)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping broker", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
