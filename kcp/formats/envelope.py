"""The envelope: JSON Lines carrying a Kafka message whole, for files that replay into Kafka.

One object per message::

    {"topic": "ztf_20180725_programid1", "partition": 0, "offset": 17, "timestamp": 1532493131000,
     "key": "ZTF18abcdefg", "headers": {"origin": "ipac", "blob": {"base64": "AAE="}},
     "value": {...the decoded record...}, "payload": "T2JqAQ..."}

- ``value`` is the decoded record (for jq); ``payload`` the exact bytes, base64, so that
  ``kcp consume --envelope T | kcp produce --envelope T2`` writes identical messages. With
  ``--raw`` only ``payload`` is written.  Reading, ``payload`` wins; without it ``value`` is
  encoded like any record (``--to``, or one Avro OCF with ``--schema``).
- keys and header values are strings when they are UTF-8 text, else ``{"base64": "..."}``;
  a header name that repeats holds a list of its values, in order (an object cannot say how
  repeats of one name interleaved with other names: they come back grouped under the first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import pybase64

from ..codec import AvroToJson, JsonToAvro, json_loads
from ..errors import BadInput
from ..message import Message
from ..options import Options
from .lines import LineStreamWriter, cut_after_last_line, read_lines


def _text_or_base64(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": pybase64.b64encode_as_string(data)}


def _bytes_of(value: Any, field: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("base64"), str):
        try:
            return pybase64.b64decode(value["base64"], validate=True)
        except ValueError:
            pass
    raise BadInput(f"envelope {field}: expected a string or {{\"base64\": ...}}")


def headers_to_json(headers: list[tuple[str, bytes | None]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in headers or ():
        encoded = _text_or_base64(value)
        if name not in out:
            out[name] = encoded
        elif isinstance(out[name], list):
            out[name].append(encoded)
        else:
            out[name] = [out[name], encoded]
    return out


def headers_from_json(headers: Any) -> list[tuple[str, bytes | None]]:
    if headers is None:
        return []
    if not isinstance(headers, dict):
        raise BadInput("envelope headers: expected an object")
    pairs = []
    for name, value in headers.items():
        for item in value if isinstance(value, list) else (value,):
            pairs.append((name, _bytes_of(item, f"header {name!r}")))
    return pairs


class EnvelopeWriter:
    def __init__(self, options: Options) -> None:
        self.to_json = AvroToJson(options.bytes_mode, options.json_style, options.mapped)

    def encode(self, message: Message) -> bytes:
        envelope: dict[str, Any] = {
            "topic": message.topic, "partition": message.partition, "offset": message.offset,
            "timestamp": message.timestamp, "key": _text_or_base64(message.key),
            "headers": headers_to_json(message.headers),
        }
        if message.decoded:
            envelope["value"] = orjson.Fragment(self.to_json(message.datum, message.schema))
        if message.value is not None:
            envelope["payload"] = pybase64.b64encode_as_string(message.value)
        return orjson.dumps(envelope)

    def recover(self, stream: BinaryIO) -> None:
        cut_after_last_line(stream)

    def open_stream(self, stream: BinaryIO) -> LineStreamWriter:
        return LineStreamWriter(stream, self.encode)


def _typed(envelope: dict, name: str, kind: type) -> Any:
    """An envelope's field, checked: the Kafka client takes it as it is."""
    value = envelope.get(name)
    if value is not None and (type(value) is not kind):
        raise BadInput(f"envelope {name}: expected {kind.__name__} or null, got {value!r:.40}")
    return value


class EnvelopeReader:
    def __init__(self, options: Options) -> None:
        self.schemas = options.schemas
        self.limits = options.limits
        self.to_avro = JsonToAvro(options.bytes_mode, options.json_style)

    def decode(self, message: Message) -> list[Message]:
        try:
            envelope = json_loads(message.value or b"")
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"invalid JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise BadInput("an envelope must be a JSON object")
        message.topic = _typed(envelope, "topic", str)
        message.partition = _typed(envelope, "partition", int)
        message.timestamp = _typed(envelope, "timestamp", int)
        message.key = _bytes_of(envelope.get("key"), "key")
        message.headers = headers_from_json(envelope.get("headers"))
        if envelope.get("payload") is not None:
            try:
                message.value = pybase64.b64decode(envelope["payload"], validate=True)
            except (ValueError, TypeError):
                raise BadInput("envelope payload: not base64") from None
            message.decoded = False
        elif "value" in envelope:
            schema = self.schemas.default
            value = envelope["value"]
            message.value = None
            message.datum = self.to_avro.datum(value, schema) if schema else value
            message.schema = schema
            message.decoded = True
        else:
            raise BadInput("an envelope needs a payload or a value")
        return [message]

    def read_stream(self, stream: BinaryIO, source: str) -> Iterator[Message]:
        return read_lines(self.decode, stream, source, self.limits.max_line_bytes)
