"""Helpers shared by kcp's tests: running the installed kcp, reading real and synthetic data."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
KCP = str(Path(sys.executable).with_name("kcp"))

# The real ZTF files PROVENANCE.md lists as corrupt: both fastavro and apache avro fail on them.
CORRUPT_ZTF = {
    "ztf_public_20180601/516401801315010009.avro",
    "ztf_public_20180601/516442330015015017.avro",
    "ztf_public_20180601/516476004815015005.avro",
    "ztf_public_20180601/516434762915010006.avro",
    "ztf_public_20180601/516442805615015004.avro",
    "ipac_simulated/121540793515135009.avro",
    "ampel-ztf-archive/schema_4.02.avro",
}


def shared(*parts: str) -> Path:
    """A path in ../shared/data; the test is skipped when that data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def real_ztf_files() -> tuple[list[Path], list[Path]]:
    """(good, corrupt) real ZTF OCF files of every schema version."""
    root = shared("ztf")
    good, corrupt = [], []
    for path in sorted(root.rglob("*.avro")):
        if "legacy_schemaless" in str(path):
            continue
        (corrupt if any(str(path).endswith(c) for c in CORRUPT_ZTF) else good).append(path)
    return good, corrupt


def fastavro_records(path: Path) -> list[Any]:
    with open(path, "rb") as stream:
        return list(fastavro.reader(stream))


def avro_bytes(records: list[Any], schema: Any) -> bytes:
    """Records as schemaless Avro bytes: equality that survives NaN (NaN != NaN)."""
    out = io.BytesIO()
    parsed = fastavro.parse_schema(schema)
    for record in records:
        fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def kcp_env(bootstrap: str | None, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(tmp / "config")  # never the developer's own config
    env.pop("KCP_CONFIG", None)
    if bootstrap:
        env["KCP_BROKER"] = bootstrap
    return env


def run_kcp(args: list[str], env: dict[str, str], stdin: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([KCP, *args], input=stdin, env=env, capture_output=True,
                          timeout=timeout)


def json_lines(data: bytes) -> Iterator[Any]:
    import orjson

    for line in data.splitlines():
        if line.strip():
            yield orjson.loads(line)


def positive_nan(value: Any) -> Any:
    """``value`` with every NaN made the positive quiet NaN: the avro JSON style drops NaN's
    sign, so round trips through it are compared modulo that."""
    if isinstance(value, float) and math.isnan(value):
        return math.nan
    if isinstance(value, dict):
        return {k: positive_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [positive_nan(v) for v in value]
    return value


class LoopbackRegistry:
    """A Confluent-compatible schema registry on 127.0.0.1 answering GET /schemas/ids/{id}
    from ``schemas`` (id -> schema text, changeable while it runs); ``hits`` lists the paths
    asked for. A context manager: the server stops on exit."""

    def __init__(self, schemas: dict[int, str]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.schemas = schemas
        self.hits: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.hits.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                found = (len(parts) == 3 and parts[:2] == ["schemas", "ids"]
                         and parts[2].isdigit() and int(parts[2]) in registry.schemas)
                body = (json.dumps({"schema": registry.schemas[int(parts[2])]}) if found else
                        json.dumps({"error_code": 40403, "message": "Schema not found"})
                        ).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> LoopbackRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def wait_timed(process: subprocess.Popen[bytes], started: float, timeout: float = 30
               ) -> tuple[int, float, bytes, bytes]:
    """Wait for ``process`` to end: its status, the seconds since ``started`` (a
    time.monotonic()), its stdout and stderr."""
    import time

    status = process.wait(timeout)
    seconds = time.monotonic() - started
    stdout, stderr = process.communicate()
    return status, seconds, stdout, stderr
