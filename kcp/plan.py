"""The assembly of a run: addresses, options and an Environment in, a :class:`Run` out.

This is the one place where a run is put together, for the command line and library users
alike::

    from kcp import Options, plan
    plan(["ztf_20180725_programid1"], "night.avro", Options()).execute()

It parses the addresses once, routes each through TRANSPORTS, loads the schemas the options
name, makes every terminal decision from the *destination* (pretty, coloured JSON with cutout
sizes only when the records go to this terminal; compact JSON Lines with base64 for files,
pipes and Kafka; a live progress line only when it cannot garble data on the same terminal),
decides once whether payloads pass untouched, compiles the stages, starts ``-j`` workers and
wires Kafka (partition counts for a mirror, exactly-once).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .address import Address, parse_address, parse_offset
from .codec import RegistryClient, RubinSchemaTree, Schema, load_schema_path
from .codec.schemas import FilledSchema
from .config import Config
from .contracts import Reader, Sink, Source
from .environment import Environment, Pager
from .errors import UsageError
from .formats import file_extensions, format_for_path, reader_for
from .formats.json import documents_suffice
from .group import ConsumerGroup, writes_alone
from .message import Message
from .metrics import Observers, PrometheusMetrics, StatsLines
from .options import Options
from .parallel import Workers
from .pipeline import (
    CallbackSink,
    Progress,
    Sources,
    Stage,
    Summary,
    close_stages,
    run,
    stages_for,
)
from .transports import kind_of, transport, transport_for

# Formats whose bytes are not text: refused on a terminal without --force.
AVRO_FORMATS = frozenset({"avro", "ocf", "confluent", "single-object", "schemaless"})
BINARY_FORMATS = AVRO_FORMATS | {"raw"}


def address_of(text: str | Address, config: Config) -> Address:
    """An address as the user wrote it, parsed with the config's broker aliases."""
    if isinstance(text, Address):
        return text
    return parse_address(text, config.brokers, file_extensions())


@dataclass
class Run:
    """Everything one run needs, opened and wired; ``execute`` moves the records."""

    source: Source
    sink: Sink
    options: Options
    decoder: Reader | None
    stages: list[Stage]
    workers: Workers | None
    observers: Observers
    live: Progress | None
    pager: Pager | None = None

    def execute(self) -> Summary:
        """Move every record; returns the summary (also printed on stderr when watched).
        Stopped by Ctrl-C, it raises KeyboardInterrupt saying how many records were written."""
        summary = Summary()
        try:
            children = isinstance(self.source, ConsumerGroup)  # they run the stages
            run(self.source, self.sink, self.options, decoder=self.decoder,
                stages=() if children else self.stages,
                progress=self.observers if self.observers.observers else None,
                workers=self.workers, summary=summary, consumer_processes=children)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"{summary.count()} written") from None
        finally:
            self.observers.done()
            if self.pager is not None:
                self.pager.close()
        if self.live is not None:
            print(f"kcp: {summary.line()}", file=self.options.environment.stderr)
        for note in [] if self.options.quiet else summary.notes:
            print(f"kcp: {note}", file=self.options.environment.stderr)
        return summary


def plan(sources: Sequence[str | Address], destination: str | Address | Sink,
         options: Options | None = None, environment: Environment | None = None,
         config: Config | None = None) -> Run:
    """The run that copies every record of ``sources`` to ``destination``: an address, or a
    sink of the caller's (e.g. ``kcp.pipeline.CallbackSink``).

    ``options`` is not changed (but for its SchemaStore, which gains the schemas the options
    name): the plan works on a copy, with what was left open decided.
    """
    config = config or Config.load()
    options = dataclasses.replace(options or Options(),
                                  environment=environment or (options.environment if options
                                                              else Environment.from_process()))
    source_addresses = [address_of(text, config) for text in sources]
    if not source_addresses:
        raise UsageError("no source to read")
    given_sink = None if isinstance(destination, str | Address) else destination
    sink_address = (Address("callback", "<caller>") if given_sink is not None
                    else address_of(destination, config))  # type: ignore[arg-type]
    _check(options, source_addresses, sink_address)
    if options.envelope:
        _envelope_side(options, source_addresses, sink_address)
    if options.raw:  # payloads pass undecoded: as they are, or into -F's lines
        options.read_format = "raw"
        if options.write_format != "template":
            options.write_format = "raw"
    _fit_destination(options, sink_address)
    _load_schemas(options)
    options.keep_payloads = _passes_payloads(options, sink_address)
    stages = stages_for(options)  # compiled first: a bad --where fails before any I/O
    opened: list[Source] = []
    sink: Sink | None = None
    pager = None
    if options.jobs > 1 and any(a.kind != "kafka" for a in source_addresses):
        raise UsageError("-j decodes records read from Kafka: give a topic source and "
                         "an output that needs decoding")
    # -j N from one Kafka source into a byte stream: N consumer processes in one group
    # (kcp.group), forked before any Kafka client exists here; otherwise -j workers.
    consumers = (options.jobs > 1 and len(source_addresses) == 1 and given_sink is None
                 and kind_of(sink_address) in ("stdio", "file") and not options.partition_by)
    try:
        if not consumers:  # sources first: a missing topic fails before a file is made
            opened = [_open_source(address, options, config) for address in source_addresses]
        pager = _pager(options, sink_address)  # once the sources are there to read
        sink = given_sink or _sink_transport(sink_address, options).open_sink(
            sink_address, options, config)
        if consumers and not writes_alone(sink):
            consumers = False  # Avro, Parquet, FITS, a stream without a descriptor: workers
            opened = [_open_source(address, options, config) for address in source_addresses]
        source: Source | None = (None if consumers else opened[0] if len(opened) == 1
                                 else Sources(opened))
        if source is not None:
            sink.copies_from(source)
        if options.exactly_once:
            transport("kafka").exactly_once(source, sink)
        options.json_documents = documents_suffice(options, sink)
        decoder = None if options.keep_payloads or options.read_format == "raw" else reader_for(
            options.read_format, options)
        workers = None
        if options.jobs > 1 and decoder is None:
            raise UsageError("-j decodes records read from Kafka: give a topic source and "
                             "an output that needs decoding")
        if consumers:
            address = source_addresses[0]
            # Without -g, the processes share the partitions out among themselves, as -j 1
            # reads them without a group (a followed ^pattern needs a group, a throw-away one).
            grouped = bool(options.group or address.group) or (
                options.follow and any(t.startswith("^") for t in address.topics))
            # A group's start is committed for it first: -o and -n for every partition;
            # --since and tail's end where the group has no position (the beginning needs
            # nothing: it stays where it is).
            explicit = options.offset is not None or options.tail_count is not None
            moving = bool(options.since) or options.default_offset != "beginning"
            source = ConsumerGroup(
                options.jobs, functools.partial(_open_source, address, config=config),
                options, decoder, stages, sink,  # type: ignore[arg-type]
                functools.partial(transport("kafka").start_group, address, config=config,
                                  keep_committed=not explicit)
                if grouped and (explicit or moving) else None, grouped)
        elif options.jobs > 1:
            workers = Workers(options.jobs, decoder, stages, sink, options.schemas)
        assert source is not None
    except BaseException:
        if sink is not None:
            sink.close(complete=False)
        for each in opened:
            each.close()
        close_stages(stages)
        if pager is not None:
            pager.close()
        raise
    live = _live_progress(options, sink_address, source)
    observers = Observers(
        live,
        StatsLines(options.stats_interval, source, options.environment.stderr)
        if options.stats_interval else None,
        PrometheusMetrics(options.metrics_port, source, sink) if options.metrics_port else None)
    return Run(source, sink, options, decoder, stages, workers, observers, live, pager)


def _open_source(address: Address, options: Options, config: Config) -> Source:
    return transport_for(address).open_source(address, options, config)


def _sink_transport(destination: Address, options: Options) -> ModuleType:
    """The transport writing to ``destination``: a file destination partitioned by a field
    is a folder of files."""
    return transport("partitioned") if options.partition_by else transport_for(destination)


def _check(options: Options, sources: list[Address], destination: Address) -> None:
    """Refuse now, before any I/O, what cannot work."""
    if (options.steps or options.fields) and options.raw:
        raise UsageError("--where, --map, --pipe-through and --fields need decoded records: "
                         "drop --raw")
    if options.offset:
        parse_offset(options.offset)  # a typo fails now, not after reaching the broker
    if options.idle_seconds is not None and kind_of(destination) != "archive":
        raise UsageError(f"{destination}: --idle finalises archives per topic: the destination "
                         "needs {topic}, e.g. 'archive/{topic}.tar.gz'")
    if (options.member_format or options.member_name) and kind_of(destination) not in (
            "tar", "archive"):
        raise UsageError(f"{destination}: --member-format and --name shape the members of a "
                         "tar archive; this destination is not one (NAME.tar, NAME.tar.gz)")
    if options.exactly_once:
        if destination.kind != "kafka" or len(sources) != 1 or sources[0].kind != "kafka":
            raise UsageError("--exactly-once copies from one Kafka source address to a Kafka "
                             "destination")
        if not (options.group or sources[0].group):
            raise UsageError("--exactly-once needs a consumer group: -g GROUP")
    if options.heartbeat and any(source.kind != "kafka" for source in sources):
        raise UsageError("--heartbeat watches a topic of the source's broker: read a topic")
    if options.fill_missing and not options.reader_schema_path:
        raise UsageError("--fill-missing fills the fields of --reader-schema: give one")
    if options.partition_by and kind_of(destination) != "file":
        raise UsageError(f"{destination}: --partition-by writes a folder of files: give a file "
                         "destination such as night.parquet")
    if options.no_clobber and kind_of(destination) in ("file", "tar") and os.path.lexists(
            os.path.expanduser(destination.path or destination.text)):
        raise UsageError(f"{destination}: exists, and -n/--no-clobber keeps it")
    if (options.authority or options.cutouts) and _written_format(options,
                                                                  destination) != "voevent":
        given = [name for name, value in (("--authority", options.authority),
                                          ("--cutouts", options.cutouts)) if value]
        where = "stdout" if destination.kind == "stdio" else destination
        raise UsageError(f"{' and '.join(given)} shape{'s' if len(given) == 1 else ''} VOEvent "
                         f"output, and {where} is not written as VOEvent: drop "
                         f"{'it' if len(given) == 1 else 'them'}, or give --to voevent (a .xml "
                         "file, a tar's --member-format voevent)")
    if _writes_avro_from_plain_json(options, sources, destination):
        raise UsageError(f"{destination}: writing Avro needs a schema for records read as "
                         "plain JSON: give --schema FILE")
    if options.template is not None:
        if options.write_format not in (None, "template"):
            raise UsageError(f"-F/--format-template writes lines of its own: drop --to "
                             f"{options.write_format}")
        options.write_format = "template"


def _writes_avro_from_plain_json(options: Options, sources: list[Address],
                                 destination: Address) -> bool:
    """JSON files to Avro without --schema: known to fail at the first record, so it fails
    before the destination is touched (no empty file, no topic created)."""
    if options.schema_path or options.envelope or options.raw or options.fields or options.steps:
        return False  # a schema given, payloads kept, or records reshaped (--out-schema, ...)

    def reads_json(address: Address) -> bool:
        if options.read_format is not None:
            return options.read_format == "json"
        found = format_for_path(address.path or address.text) if address.kind == "file" else None
        return found is not None and found.name == "json" and kind_of(address) == "file"

    if not sources or not all(reads_json(address) for address in sources):
        return False
    return _written_format(options, destination) in AVRO_FORMATS


def _written_format(options: Options, destination: Address) -> str | None:
    """The format the records are written in, as the options and the destination say."""
    if options.write_format is not None:
        return options.write_format
    kind = kind_of(destination)
    if kind == "kafka":
        return "avro"  # one OCF per record, what ZTF sends
    if kind in ("tar", "archive"):
        return options.member_format or "avro"
    if kind == "file":
        found = format_for_path(destination.path or destination.text)
        return found.name if found else None
    return "json" if kind == "stdio" else None


def _envelope_side(options: Options, sources: list[Address], destination: Address) -> None:
    """``--envelope`` names the format of the side that is not Kafka."""
    if destination.kind != "kafka":
        options.write_format = "envelope"
        if options.raw:  # --raw --envelope: payloads only, nothing decoded
            options.raw = False
            options.read_format = "raw"
            return
        options.read_format = None
    elif all(s.kind != "kafka" for s in sources):
        options.read_format = "envelope"
        options.raw = False
    else:
        raise UsageError("--envelope is for copies between Kafka and files or pipes")


def _fit_destination(options: Options, destination: Address) -> None:
    """How records look, from where they go: for eyes only when they go to this terminal."""
    to_terminal = destination.kind == "stdio" and options.environment.stdout_isatty
    if options.bytes_mode is None:
        options.bytes_mode = "summary" if to_terminal else "base64"
    if destination.kind != "stdio":
        options.pretty = False  # files and Kafka hold JSON Lines, one record a line
    elif options.pretty is None:
        options.pretty = to_terminal
    options.colour = options.pretty and to_terminal and options.environment.colour_allowed
    # text payloads shown as they are, when nothing reads fields of the records
    options.show_text = (to_terminal and options.read_format is None
                         and options.write_format in (None, "json")
                         and not options.steps and not options.fields)
    if to_terminal and options.write_format in BINARY_FORMATS and not options.force:
        raise UsageError(f"refusing to write {options.write_format} data to a terminal; "
                         "pipe or redirect it, or give --force")


def _pager(options: Options, destination: Address) -> Pager | None:
    """$PAGER for records read on this terminal, when asked (--pager, the CLI's default) and
    the read ends (not following): the environment's stdout becomes the pager's stdin."""
    if not options.pager or options.follow or destination.kind != "stdio":
        return None
    options.environment, pager = options.environment.paged()
    return pager


def _load_schemas(options: Options) -> None:
    store = options.schemas
    if options.schema_path:
        store.default = store.add(load_schema_path(options.schema_path,
                                                   registry_id=options.schema_id))
    if options.reader_schema_path:
        store.reader = load_schema_path(options.reader_schema_path)
        if options.fill_missing:
            store.reader = FilledSchema(store.reader)
    if options.out_schema_path:
        options.out_schema = load_schema_path(options.out_schema_path)
    if options.schema_dir:
        store.add_id_resolver(RubinSchemaTree(options.schema_dir))
    if options.registry:
        store.add_id_resolver(RegistryClient(options.registry))
    packaged = RubinSchemaTree.from_package()
    if packaged is not None:
        store.add_id_resolver(packaged)
    if options.schema_id is not None and not options.schema_path:
        # --schema-id alone: the schema of that id (Rubin's offline, or the registry's)
        store.default = store.by_id(options.schema_id)
        if store.default is None:
            raise UsageError(f"--schema-id {options.schema_id}: no schema has this id here "
                             "(Rubin's need the lsst-alert-packet package or --schema-dir; "
                             "else give --registry or --schema FILE)")


def _passes_payloads(options: Options, destination: Address) -> bool:
    """Whether records reach the sink as the payloads they were read as, never decoded: when
    the sink writes payloads (Kafka) and nothing asks to look inside or reshape them."""
    return (destination.kind == "kafka" and options.write_format is None
            and options.schemas.reader is None and options.reader_schema_path is None
            and not options.steps and not options.fields
            and not options.since and not options.until
            and not options.save_schema and not options.pace)  # these read the records


def _live_progress(options: Options, destination: Address, source: Source) -> Progress | None:
    """A live count and final summary on stderr: when asked, or by default when someone
    watches stderr and the records do not go to stdout (where they may reach the same
    terminal, through ``| jq`` say, and a redrawn line would garble them)."""
    if options.quiet:
        return None
    environment = options.environment
    # A caller's own sink (kcp schema, a library user) has its own say: no line by default.
    watched = environment.stderr_isatty and destination.kind not in ("stdio", "callback")
    wanted = options.progress if options.progress is not None else watched
    return Progress(environment.stderr, source, options.count) if wanted else None



def schema_census(sources: str | Address | Sequence[str | Address],
                  options: Options | None = None, environment: Environment | None = None,
                  config: Config | None = None) -> list[tuple[Schema, int]]:
    """Each distinct writer schema of the records of ``sources`` (one address or several)
    with how many records have it, in the order first seen (``options.count`` = 1: the first
    record's only)."""
    if isinstance(sources, str | Address):
        sources = [sources]
    census: dict[int, list] = {}

    def record(message: Message) -> None:
        found = message.schema
        if found is None:
            raise UsageError(f"{message.where()}: this record carries no Avro schema")
        census.setdefault(found.fingerprint, [found, 0])[1] += 1

    plan(sources, CallbackSink(record), options, environment, config).execute()
    if not census:
        raise UsageError(f"{', '.join(map(str, sources))}: no records, so no schema")
    return [(found, count) for found, count in census.values()]


def describe_topics(broker_pattern: str | None, options: Options | None = None,
                    config: Config | None = None) -> list[dict[str, Any]]:
    """The topics of a broker (``BROKER``, ``BROKER:`` or ``BROKER:^PATTERN``; None: the
    default broker) with their partitions, message counts and first and last timestamps."""
    config = config or Config.load()
    if broker_pattern is None or broker_pattern in config.brokers:
        address = Address("kafka", broker_pattern or "", broker=broker_pattern)
    elif _is_broker(broker_pattern):  # host:port, not the topic "port" of broker "host"
        address = Address("kafka", broker_pattern, broker=broker_pattern)
    else:
        address = address_of(broker_pattern, config)
        if address.kind != "kafka":
            raise UsageError(f"{broker_pattern}: not a broker (BROKER, BROKER: or "
                             "BROKER:PATTERN)")
    return transport("kafka").describe_topics(address, options or Options(), config)


def _is_broker(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and ":" not in host)


def group_lag(group_address: str, options: Options | None = None,
              config: Config | None = None) -> list[dict[str, Any]]:
    """How far the consumer group ``[BROKER:]GROUP`` is behind, per topic and partition."""
    config = config or Config.load()
    broker, _, group = group_address.rpartition(":")
    if not group:
        raise UsageError(f"{group_address}: name a consumer group ([BROKER:]GROUP)")
    address = Address("kafka", group_address, broker=broker or None)
    return transport("kafka").group_lag(address, group, options or Options(), config)


def complete_topics(incomplete: str, config: Config | None = None) -> list[str]:
    """Shell completion: the topic names (as ``[BROKER:]TOPIC``) starting like ``incomplete``,
    asked of the broker for one second at most; none when it does not answer in time."""
    if incomplete.startswith((".", "/", "~")) or "://" in incomplete:
        return []
    try:
        config = config or Config.load()
        broker, sep, prefix = incomplete.rpartition(":")
        address = Address("kafka", incomplete, broker=broker or None)
        names = transport("kafka").topic_names(address, Options(timeout=1.0), config)
    except Exception:  # completion must never fail loudly: the shell offers files instead
        return []
    lead = f"{broker}{sep}" if sep else ""
    return [lead + name for name in names if name.startswith(prefix)]
