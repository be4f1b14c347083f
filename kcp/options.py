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
    # The codec of the Avro container files written (files, tar members, Kafka payloads);
    # None: "null" for records encoded, payloads passed on as they were read.
    codec: str | None = None
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
    save_schema: str | None = None  # a file for the writer schema of the records read
    partition_by: str | None = None  # a file destination becomes a folder per field value
    pace: str | None = None  # replay at the records' own cadence: original, Nx or N/s
    pipe_timeout: float = 30.0
    # The run
    count: int | None = None
    on_error: str = "fail"
    progress: bool | None = None
    quiet: bool = False
