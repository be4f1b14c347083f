"""The Confluent Schema Registry client, isolated so only registry users import confluent_kafka."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import TransportError, UsageError


def open_registry(url: str) -> Callable[[int], str | None]:
    """A function returning the schema text registered under an id, or None if there is none."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.error import SchemaRegistryError
    except ImportError as exc:  # the registry client needs confluent-kafka's optional extra
        raise UsageError(f"--registry needs confluent-kafka's registry client ({exc}): "
                         "pip install 'confluent-kafka[schemaregistry]'") from None

    client = SchemaRegistryClient({"url": url})

    def schema_text(schema_id: int) -> str | None:
        try:
            return client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise TransportError(f"schema registry {url}: {exc}") from None
        except Exception as exc:  # requests/httpx errors differ across versions
            raise TransportError(f"schema registry {url} unreachable: {exc}") from None

    return schema_text
