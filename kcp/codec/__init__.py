"""The shared Avro core: schemas and their sources, framings, and the Avro <-> JSON mapping."""

from .framing import CODECS, FRAMINGS, decode_payload, detect_framing, encoder_for, write_body
from .jsonmap import (
    BYTES_MODES,
    FILES_MODE,
    JSON_STYLES,
    AvroToJson,
    JsonToAvro,
    inline_bytes_mode,
    json_loads,
)
from .schemas import RegistryClient, RubinSchemaTree, Schema, SchemaStore, load_schema_path

__all__ = [
    "BYTES_MODES", "CODECS", "FILES_MODE", "FRAMINGS", "JSON_STYLES", "AvroToJson", "JsonToAvro",
    "RegistryClient", "RubinSchemaTree", "Schema", "SchemaStore", "decode_payload",
    "detect_framing", "encoder_for", "inline_bytes_mode", "json_loads", "load_schema_path",
    "write_body",
]
