"""Everything a run is asked to do, gathered from the command line, environment and config.

The CLI fills an :class:`Options` from its flags; library users fill one themselves.  Nothing here
is decided yet: :func:`kcp.plan.plan` resolves what is left open (``None``) from the addresses and
the :class:`kcp.environment.Environment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import SchemaStore
from .codec.limits import Limits
from .environment import Environment


@dataclass
class Options:
    """The settings every stage reads."""

    # The streams stdin/stdout/stderr of the run ("-" addresses, diagnostics)
    environment: Environment = field(default_factory=Environment.from_process)
    # Schemas: the store every stage shares; the paths and URLs below are loaded into it by the
    # plan (library users may fill the store directly instead).
    schemas: SchemaStore = field(default_factory=SchemaStore)
    # How far a payload's claims are followed (depth, counts, block and line sizes); the
    # schema store reads the same object (kcp.codec.limits).
    limits: Limits = field(default_factory=Limits)
    schema_path: str | None = None
    schema_id: int | None = None
    schema_dir: str | None = None
    registry: str | None = None
    reader_schema_path: str | None = None
    # --fill-missing: fields the reader schema adds without a default get their type's zero
    fill_missing: bool = False
    save_schema: str | None = None  # a file for the writer schema of the records read
    out_schema_path: str | None = None
    out_schema: Any = None
    # Formats: what payloads are read as and written as (None: detect, or the sink's default).
    read_format: str | None = None
    write_format: str | None = None
    raw: bool = False  # payloads pass undecoded, one per line
    envelope: bool = False  # the side that is not Kafka holds whole Kafka messages
    # How JSON looks: None means "decided from the destination" (pretty and sizes on a terminal)
    bytes_mode: str | None = None
    json_style: str = "kcp"
    pretty: bool | None = None
    colour: bool = False  # set by the plan: only ever for a terminal
    force: bool = False  # binary data even to a terminal
    # Set by the plan for JSON read on a terminal: payloads that are plain text (GCN's classic
    # notices) are shown as that text; pipes and files get what they always get.
    show_text: bool = False
    # Long output read on a terminal goes through $PAGER (the CLI's consume, convert and cp;
    # --no-pager): never when following, nor into a pipe or file.
    pager: bool = False
    delimiter: bytes = b"\n"
    template: str | None = None  # -F: the line each record becomes (kcp.formats.template)
    # The codec of the Avro container files written (files, tar members, Kafka payloads);
    # None: "null" for records encoded, payloads passed on as they were read.
    codec: str | None = None
    # VOEvent (kcp.formats.voevent): the IVORN authority and cutout policy of alerts written as
    # VOEvent (None: the format's defaults; given for another output, a usage error), and the
    # size limit of a packet read (they come from the internet)
    authority: str | None = None
    cutouts: str | None = None
    max_xml_bytes: int = 1_000_000
    # Tar archives (kcp.transports.tar): the format and name template of members written, and
    # the size of the largest member read (archives come from the internet too)
    member_format: str | None = None
    member_name: str | None = None
    max_member_bytes: int = 256 << 20
    # Set by the plan when nothing downstream needs decoded records (a topic copied to a topic,
    # files produced to Kafka as they are): sources then hand over payloads untouched.
    keep_payloads: bool = False
    # Set when every record only becomes a JSON Lines document in the kcp style, with no stage
    # reading its values: Avro readers may then hand over finished JSON documents, transcoded
    # natively (kcp.codec.native; kcp.formats.json.documents_suffice decides).
    json_documents: bool = False
    # Kafka
    kafka_properties: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    offset: str | None = None
    default_offset: str = "beginning"  # where to start when -o is not given (tail: "end")
    partitions: tuple[int, ...] = ()
    # (i, n): read only every n-th of the partitions read without a group, from the i-th (the
    # -j consumer processes of kcp.group without -g share them out this way)
    share: tuple[int, int] | None = None
    follow: bool = False
    tail_count: int | None = None
    timeout: float = 30.0
    # A topic that must not fall silent for longer than heartbeat_timeout seconds (GCN)
    heartbeat: str | None = None
    heartbeat_timeout: float = 30.0
    keep_partition: bool = False
    exactly_once: bool = False
    rename: str | None = None
    no_clobber: bool = False  # cp -n: an existing destination file is refused, not replaced
    # kcp produce -k/-H/-p: the key, extra headers and partition of every message sent
    message_key: bytes | None = None
    message_headers: tuple[tuple[str, bytes], ...] = ()
    to_partition: int | None = None
    # Archives per topic ('DIR/{topic}.tar.gz'): finalise one after this many idle seconds
    idle_seconds: float | None = None
    partition_by: str | None = None  # a file destination becomes a folder per field value
    # Stages: --since/--until, then --where/--map/--pipe-through steps in the order given
    # (("where", EXPR), ("map", TARGET), ("pipe", COMMAND)), then --fields.
    since: str | None = None
    until: str | None = None
    steps: tuple[tuple[str, str], ...] = ()
    fields: str | None = None
    pace: str | None = None  # replay at the records' own cadence: original, Nx or N/s
    pipe_timeout: float = 30.0
    jobs: int = 1
    # The run
    count: int | None = None
    on_error: str = "fail"
    progress: bool | None = None  # None: live progress when someone watches and it cannot garble
    quiet: bool = False
    stats_interval: float | None = None
    metrics_port: str | None = None

    def __post_init__(self) -> None:
        self.schemas.limits = self.limits

    @property
    def mapped(self) -> bool:
        """Whether a --map function may hand records values their schema does not hold (a
        field it adds without OUTPUT_FIELDS): JSON writers then look at every value."""
        return any(kind == "map" for kind, _ in self.steps)
