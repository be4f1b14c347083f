"""Operating kcp for months: lag, metrics, periodic stats (against the real broker)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Producer
from kcptest import KCP, json_lines, kcp_env, run_kcp

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(bootstrap: str, topic: str, count: int, partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, b'{"i": %d}' % i, timestamp=1_600_000_000_000 + i, **extra)
    producer.flush(10)


def test_lag_reports_exactly_what_a_group_left_unread(kafka_bootstrap, make_topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    topic = make_topic(partitions=2)
    fill(kafka_bootstrap, topic, 10, partition=0)
    fill(kafka_bootstrap, topic, 4, partition=1)
    read = run_kcp(["consume", topic, "-g", "laggard", "-p", "0", "-c", "3"], env)
    assert read.returncode == 0, read.stderr
    result = run_kcp(["lag", "laggard", "--json"], env)
    assert result.returncode == 0, result.stderr
    (row,) = list(json_lines(result.stdout))
    assert (row["topic"], row["partition"], row["committed"], row["end"], row["lag"]) == (
        topic, 0, 3, 10, 7)
    # The oldest unread message (offset 3) was stamped 1600000000003 ms.
    assert abs(row["lag_seconds"] - (time.time() - 1_600_000_000.003)) < 60
    missing = run_kcp(["lag", "nobody-here"], env)
    assert missing.returncode == 4 and b"has committed no offsets" in missing.stderr


def test_metrics_endpoint_and_stats_lines(kafka_bootstrap, topic, tmp_path):
    env = kcp_env(kafka_bootstrap, tmp_path)
    fill(kafka_bootstrap, topic, 25)
    port = free_port()
    follower = subprocess.Popen([KCP, "consume", topic, "-f", "--metrics-port",
                                 f"127.0.0.1:{port}", "--stats-interval", "0.5"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        metrics = ""
        deadline = time.monotonic() + 30
        while "kcp_records_total 25.0" not in metrics and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    metrics = r.read().decode()
            except OSError:
                continue
        assert "kcp_records_total 25.0" in metrics
        assert "kcp_lag_messages 0.0" in metrics
        assert "kcp_errors_total 0.0" in metrics
        assert "kcp_last_message_age_seconds" in metrics
        time.sleep(1.5)  # at least one --stats-interval line
    finally:
        follower.terminate()
        assert follower.wait(20) == 0
    stats = [json.loads(line) for line in follower.stderr.read().splitlines()]
    assert stats and stats[-1]["records"] == 25 and stats[-1]["lag"] == 0
