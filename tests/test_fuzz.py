"""The fuzz tier: mutated inputs into every reader kcp exposes to other people's bytes.

Targets: framing detection and payload decoding, OCF files, JSON -> Avro (values, and JSON
text in both styles), VOEvent packets, tar archives and FITS alerts. Each must answer with
records or ``BadInput``, nothing else (no other exception, no hang: hypothesis' deadline
catches slow inputs). Inputs start from seeds built by code (tests/hostile.py, kcp's own
writers) and are mutated: bytes flipped, cut, inserted, and hostile varints spliced in.

- ``make test`` runs each target briefly (FUZZ_EXAMPLES, 100 by default) and first replays
  every failing input saved in tests/fuzz-corpus (hypothesis' example database), so a
  regression found once shows in CI;
- ``make fuzz`` runs each for FUZZ_SECONDS (60 by default) on random buffers through
  hypothesis' ``fuzz_one_input``; what fails is saved to tests/fuzz-corpus.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hostile import CASES, LINKED, POINT, fits_with, good_ocf, tar_of, varint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

from kcp.codec import AvroToJson, JsonToAvro, Schema, decode_payload, write_body
from kcp.errors import BadInput
from kcp.message import Message
from kcp.options import Options

CORPUS = Path(__file__).parent / "fuzz-corpus"
FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "0"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
# make test replays the corpus without writing to it (a test run changes no file of the
# checkout); make fuzz saves what fails there.
CORPUS_DATABASE = DirectoryBasedExampleDatabase(str(CORPUS))
FUZZ = settings(max_examples=EXAMPLES, deadline=5000,
                database=CORPUS_DATABASE if FUZZ_SECONDS else ReadOnlyDatabase(CORPUS_DATABASE),
                suppress_health_check=list(HealthCheck), derandomize=False)
HOSTILE_VARINTS = [-1, -2, 1 << 31, 1 << 62, -(1 << 62), 10**9, 0]


def _options() -> Options:
    options = Options()
    # Smaller than the defaults so that each input is quick; the same code paths.
    options.limits.max_block_bytes = 8 << 20
    options.limits.max_items = 100_000
    options.limits.max_line_bytes = 8 << 20
    return options


def _small_seeds(extension: str) -> list[bytes]:
    return [data for case in CASES if case.filename.endswith(extension)
            and len(data := case.data()) < 1 << 16]


@st.composite
def mutated(draw: Any, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(("flip", "cut", "insert", "varint")))
        if edit == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif edit == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        else:
            data[at:at] = varint(draw(st.sampled_from(HOSTILE_VARINTS)))
    return bytes(data)


def _drain(messages: Any) -> None:
    """Read every message a reader yields, writing records as JSON as a run would."""
    to_json = AvroToJson()
    for message in messages:
        if message.error is None and message.decoded:
            with contextlib.suppress(BadInput):
                to_json(message.datum, message.schema)


def _stream(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]


# -- seeds ---------------------------------------------------------------------------------------
def _ocf_seeds() -> list[bytes]:
    return [good_ocf([{"n": i, "x": i / 2} for i in range(3)]), *_small_seeds(".avro")]


def _payload_seeds() -> list[bytes]:
    point = Schema(POINT)
    body = write_body({"n": 7, "x": 1.5}, point)
    return [*_ocf_seeds(), b"\0\0\0\0\x01" + body, b"\xc3\x01" + point.fingerprint.to_bytes(
        8, "little") + body, b'{"n": 1}']


def _voevent_seeds() -> list[bytes]:
    from kcp.formats.voevent import VoeventWriter

    writer = VoeventWriter(Options())
    alert = Message(datum={"n": 1, "x": 0.5}, schema=Schema(POINT), decoded=True)
    packet = writer.encode(alert)
    many = b" ".join(b'p:a%d="v"' % i for i in range(100))  # read by XPath, not items()
    return [packet, packet.replace(b"<What>", b"<What><Param name='a' value='1'/>" * 20),
            packet.replace(b"<What>", b'<What xmlns:p="urn:p" ' + many + b">"),
            b"<?xml version='1.0'?><!DOCTYPE v [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><v>&e;</v>"]


def _json_seeds() -> list[bytes]:
    return [b'{"n": 1, "x": 0.5}\n{"n": 18446744073709551615, "x": "NaN"}\n',
            b'[{"n": 1, "x": 3.4e38}, {"n": 100000000000000000000000000000}]',
            b'{"n": 1, "x": null}\n{"n": -9223372036854775809, "x": 1e39}\n',
            *_small_seeds(".jsonl")]


def _tar_seeds() -> list[bytes]:
    return [tar_of([("a.avro", good_ocf()), ("b.json", b'{"n": 2}\n')]),
            tar_of([("../escape.avro", good_ocf())])]


def _fits_seeds() -> list[bytes]:
    return [fits_with("NAXIS", 0), fits_with("TFIELDS", 2)]


# -- targets -------------------------------------------------------------------------------------
@FUZZ
@given(mutated(_payload_seeds()), st.booleans())
def test_fuzz_framing_detection_and_payloads(data: bytes, with_schema: bool) -> None:
    store = _options().schemas
    if with_schema:
        store.default = store.add(Schema(POINT))
    try:
        for datum, schema in decode_payload(data, store):
            AvroToJson()(datum, schema)
    except BadInput:
        pass


@FUZZ
@given(mutated(_ocf_seeds()))
def test_fuzz_ocf_files(data: bytes) -> None:
    from kcp.formats.avro import AvroReader

    _drain(AvroReader(_options()).read_stream(_stream(data), "fuzz.avro"))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["n", "x", "v", "next"]), inner, max_size=4),
                    max_leaves=20)


@FUZZ
@given(JSON, st.sampled_from([POINT, LINKED, {"type": "array", "items": "null"}]))
def test_fuzz_json_to_avro(value: Any, definition: Any) -> None:
    schema = Schema(definition)
    with contextlib.suppress(BadInput):
        write_body(JsonToAvro().datum(value, schema), schema)


@FUZZ
@given(mutated(_json_seeds()), st.sampled_from(["kcp", "avro"]))
def test_fuzz_json_text(data: bytes, style: str) -> None:
    """JSON text read without a schema, then each line with one in either style: its numbers
    come back as they were written or are refused (hostile.py's JSON number cases)."""
    from kcp.formats.json import JsonReader

    _drain(JsonReader(_options()).read_stream(_stream(data), "fuzz.jsonl"))
    schema = Schema(POINT)
    to_avro = JsonToAvro(style=style)
    for line in data.splitlines()[:8]:
        with contextlib.suppress(BadInput):
            write_body(to_avro(line, schema), schema)


@FUZZ
@given(mutated(_voevent_seeds()))
def test_fuzz_voevent(data: bytes) -> None:
    from kcp.formats.voevent import VoeventReader

    _drain(VoeventReader(_options()).read_stream(_stream(data), "fuzz.xml"))


@FUZZ
@given(mutated(_tar_seeds()))
def test_fuzz_tar(data: bytes) -> None:
    from kcp.transports.tar import read_archive

    _drain(read_archive(_stream(data), "fuzz.tar", _options()))


@FUZZ
@given(mutated(_fits_seeds()))
def test_fuzz_fits(data: bytes) -> None:
    from kcp.formats.fits import FitsReader

    _drain(FitsReader(_options()).read_stream(_stream(data), "fuzz.fits"))


TARGETS = [test_fuzz_framing_detection_and_payloads, test_fuzz_ocf_files, test_fuzz_json_to_avro,
           test_fuzz_json_text, test_fuzz_voevent, test_fuzz_tar, test_fuzz_fits]


@pytest.mark.skipif(not FUZZ_SECONDS, reason="make fuzz sets FUZZ_SECONDS")
@pytest.mark.parametrize("target", TARGETS, ids=[t.__name__[10:] for t in TARGETS])
def test_fuzz_for_a_while(target: Any) -> None:
    """Random buffers through the target for FUZZ_SECONDS; a failure is saved and raised."""
    rng = random.Random()
    deadline = time.monotonic() + FUZZ_SECONDS
    runs = 0
    while time.monotonic() < deadline:
        target.hypothesis.fuzz_one_input(rng.randbytes(rng.randint(16, 4096)))
        runs += 1
    print(f"{target.__name__}: {runs} inputs in {FUZZ_SECONDS:.0f} s")
