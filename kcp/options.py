"""Everything a run is asked to do, gathered from the command line, environment and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import SchemaStore


@dataclass
class Options:
    """The settings every stage reads; the CLI fills it, library users may too."""

    schemas: SchemaStore = field(default_factory=SchemaStore)
    # Formats: what payloads are read as and written as (None: detect, or the sink's default).
    read_format: str | None = None
    write_format: str | None = None
    bytes_mode: str | None = "base64"
    json_style: str = "kcp"
    pretty: bool = False
    colour: bool = False
    delimiter: bytes = b"\n"
    # VOEvent (kcp.formats.voevent): the IVORN authority and cutout policy of alerts written as
    # VOEvent, and the size limit of a packet read (they come from the internet)
    authority: str = "ivo://kcp.local/alerts"
    cutouts: str = "reference"
    max_xml_bytes: int = 1_000_000
    # Tar archives (kcp.transports.tar): the format and name template of members written, and
    # the size of the largest member read (archives come from the internet too)
    member_format: str | None = None
    member_name: str | None = None
    max_member_bytes: int = 256 << 20
    # Sources may hand over records as payloads without decoding them (set when nothing
    # downstream needs the decoded record, e.g. files produced to Kafka as they are).
    keep_payloads: bool = False
    # Set when every record only becomes a JSON Lines document in the kcp style, with no stage
    # reading its values: Avro readers may then hand over finished JSON documents, transcoded
    # natively (kcp.codec.native; kcp.formats.json.documents_suffice decides).
    json_documents: bool = False
    # Kafka
    kafka_properties: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    offset: str | None = None
    partitions: tuple[int, ...] = ()
    follow: bool = False
    exit_at_end: bool = True
    tail_count: int | None = None
    timeout: float = 30.0
    # Stages: --since/--until, then --where/--map/--pipe-through steps in the order given
    # (("where", EXPR), ("map", TARGET), ("pipe", COMMAND)), then --fields.
    since: str | None = None
    until: str | None = None
    steps: tuple[tuple[str, str], ...] = ()
    fields: str | None = None
    out_schema: Any = None
    pipe_timeout: float = 30.0
    # The run
    count: int | None = None
    on_error: str = "fail"
    progress: bool | None = None
    quiet: bool = False
