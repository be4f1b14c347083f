"""The kcp command line: click options turned into a pipeline run.  The only module using click."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import BashComplete, add_completion_class, split_arg_string

from . import __version__
from .codec.native import codec_name
from .errors import EXIT_STATUS_HELP, ExitStatus, KcpError, Terminated, UsageError

EXIT_STATUS_TEXT = "\b\nExit status:\n" + "\n".join(
    f"  {int(status):<4} {text}" for status, text in EXIT_STATUS_HELP.items())

ADDRESS_TEXT = """\b
Addresses:
  -                       stdin / stdout
  PATH, 'GLOB'            files; format from the extension (.avro .json .jsonl)
  TOPIC                   a topic on the default broker (KCP_BROKER, config, localhost:9092)
  NAME:TOPIC              NAME is a config alias or host[:port]; TOPIC may be ^regex
  kafka://[GROUP@]HOST[:PORT][,HOST...]/TOPIC[,TOPIC...]"""


def _debug(ctx: click.Context, param: click.Parameter, debug: bool) -> bool:
    """``--debug``: tracebacks and librdkafka's log on stderr (read by the error boundary)."""
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="kcp %(name)s: %(message)s")
        ctx.find_root().meta["kcp.debug"] = True
    return debug


def _quiet_stdout() -> None:
    # Whoever read our output has gone (`| head`), or stdout cannot take more: Python must not
    # try again, and complain, while flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    except OSError:
        pass


def _exit_status(error: BaseException, ctx: click.Context) -> int:
    """The one mapping of every outcome onto the documented exit statuses (errors.py); what
    went wrong is one line on stderr, a traceback only with --debug."""
    if isinstance(error, KeyboardInterrupt | Terminated):
        # What a stopped run could not push out (a pipe nobody reads) is given up: exiting
        # must not wait for that reader either.
        _quiet_stdout()
        if isinstance(error, Terminated):
            return int(ExitStatus.OK)
        said = f" ({error})" if str(error) else ""  # the records written (kcp.plan.Run)
        click.echo(f"kcp: interrupted{said}", err=True)
        return int(ExitStatus.INTERRUPTED)
    if isinstance(error, BrokenPipeError):
        _quiet_stdout()
        return int(ExitStatus.OK)
    if ctx.meta.get("kcp.debug"):
        import traceback

        traceback.print_exception(error)
    if isinstance(error, KcpError):
        click.echo(f"kcp: {error}", err=True)
        return int(error.status)
    if isinstance(error, OSError):
        where = error.filename or ctx.meta.get("kcp.destination") or "kcp"
        click.echo(f"kcp: {where}: {error.strerror or error}", err=True)
        _quiet_stdout()
        return int(ExitStatus.RUNTIME_ERROR)
    click.echo(f"kcp: internal error: {type(error).__name__}: {error} (run again with --debug "
               "for the traceback, and please report it)", err=True)
    return int(ExitStatus.RUNTIME_ERROR)


# -- options shared by commands -----------------------------------------------------------------
def _duration(ctx: click.Context, param: click.Parameter, text: str | None) -> float | None:
    from .times import parse_duration

    return None if text is None else parse_duration(text)


def _kafka_properties(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                      ) -> dict[str, str]:
    properties = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value (a librdkafka property)")
        properties[key.strip()] = value
    return properties


def _headers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
             ) -> tuple[tuple[str, bytes], ...]:
    headers = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE")
        headers.append((name, value.encode()))
    return tuple(headers)


def options(*groups: list[Callable[..., Any]]) -> Callable[..., Any]:
    """A command's options: the groups that apply to it, in the order given (--help too)."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([option for group in groups for option in group]):
            command = option(command)
        return command
    return decorate


# -- the groups: each command takes the ones that can apply to it -------------------------------
CONNECTION = [
    click.option("-X", "kafka_properties", multiple=True, metavar="KEY=VALUE",
                 callback=_kafka_properties,
                 help="Any librdkafka property, e.g. -X security.protocol=SASL_SSL. A "
                      "password given here (-X sasl.password=...) is visible to every "
                      "user in ps: keep it in a config profile's password_file or "
                      "password_env instead."),
    click.option("--timeout", type=float, default=30.0, show_default=True, metavar="SECONDS",
                 help="How long to wait for a broker slow to answer before giving up (exit 4; "
                      "one refusing connections is said at once)."),
]
GROUP = [
    click.option("-g", "--group", metavar="GROUP",
                 help="Consumer group: resume where it stopped; commit what was handled."),
]
POSITION = [
    click.option("-o", "--offset", metavar="OFFSET",
                 help="Where to start: beginning, end, N, -N (N before the end), "
                      "@TIMESTAMP_MS or @ISO-8601 time."),
    click.option("-p", "--partition", "partitions", type=int, multiple=True,
                 help="Read only this partition (repeatable)."),
]
COUNT = [
    click.option("-c", "--count", type=click.IntRange(min=0), metavar="N",
                  help="Stop after N records."),
]
JOBS = [
    click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, metavar="N",
                 help="Read, decode, filter and encode in N processes. From one Kafka "
                      "address to stdout or a file of records written one after the other "
                      "(JSON Lines, VOEvent, ...): N consumers, each on its own partitions "
                      "(members of the -g group; without -g each takes its share), order "
                      "kept within a partition; scales up to the topic's partitions. To "
                      "Kafka, tars, Avro "
                      "and Parquet files: N decode workers fed by one reader, order kept. "
                      "Pays off with cores to spare beyond the broker's (docs/performance.md)."),
]

HEARTBEAT = [
    click.option("--heartbeat", metavar="TOPIC",
                 help="Exit 4 when this topic of the source's broker (GCN: gcn.heartbeat) "
                      "is silent for --heartbeat-timeout seconds."),
    click.option("--heartbeat-timeout", type=click.FloatRange(min=0.5), default=30.0,
                 show_default=True, metavar="SECONDS",
                 help="How long the --heartbeat topic may be silent."),
]


def _read_format_options() -> list[Callable[..., Any]]:
    from .codec.limits import Limits
    from .formats import FORMATS
    from .options import Options

    names = list(FORMATS)
    return [
        click.option("--from", "read_format", type=click.Choice(names), metavar="FORMAT",
                     help="Read payloads as FORMAT instead of detecting it: "
                          + ", ".join(names) + "."),
        click.option("--schema", "schema_path", metavar="FILE|DIR",
                     help="Writer schema (.avsc, or a folder of .avsc files) for JSON input "
                          "and schemaless or unknown-id payloads."),
        click.option("--schema-dir", metavar="DIR",
                     help="A tree DIR/MAJOR/MINOR/*.avsc resolving Rubin schema ids offline."),
        click.option("--registry", metavar="URL",
                     help="A Confluent-compatible Schema Registry resolving schema ids."),
        click.option("--reader-schema", "reader_schema_path", metavar="FILE|DIR",
                     help="Decode every record into this schema (Avro schema evolution; "
                          "decoded by the Python codec, not the native one)."),
        click.option("--fill-missing", is_flag=True,
                     help="Give the --reader-schema fields a record lacks and that have no "
                          "default their type's zero (null, 0, \"\", []), and say how many."),
        click.option("--save-schema", metavar="FILE",
                     help="Save the writer schema of the records read to FILE (a further "
                          "distinct schema to FILE.2, FILE.3 before the extension, said on "
                          "stderr)."),
        click.option("--max-xml-bytes", type=click.IntRange(min=1), default=Options.max_xml_bytes,
                     show_default=True, metavar="N", help="VOEvent: refuse larger packets."),
        click.option("--max-member-size", "max_member_bytes", type=click.IntRange(min=1),
                     default=Options.max_member_bytes >> 20, show_default=True, metavar="MB",
                     callback=lambda _context, _option, megabytes: megabytes << 20,
                     help="Tar: a larger member read is bad input."),
        click.option("--max-depth", type=click.IntRange(min=1), default=Limits.max_depth,
                     show_default=True, metavar="N",
                     help="A record, JSON document or schema nested deeper is bad input."),
        click.option("--max-items", type=click.IntRange(min=1), default=Limits.max_items,
                     show_default=True, metavar="N",
                     help="Most items an array of nulls (or empty records), or an OCF block of "
                          "such records, may declare."),
        click.option("--max-block-size", "max_block_bytes", type=click.IntRange(min=1),
                     default=Limits.max_block_bytes >> 20, show_default=True, metavar="MB",
                     callback=lambda _context, _option, megabytes: megabytes << 20,
                     help="Avro: an OCF block inflating to more (a decompression bomb) is bad "
                          "input."),
        click.option("--max-line-size", "max_line_bytes", type=click.IntRange(min=1),
                     default=Limits.max_line_bytes >> 20, show_default=True, metavar="MB",
                     callback=lambda _context, _option, megabytes: megabytes << 20,
                     help="A longer JSON line, whole-file payload or --pipe-through answer is "
                          "bad input."),
    ]


def _write_format_options() -> list[Callable[..., Any]]:
    from .codec import BYTES_MODES, CODECS, JSON_STYLES
    from .formats import FORMATS
    from .formats.voevent import CUTOUT_POLICIES, DEFAULT_AUTHORITY, DEFAULT_CUTOUTS

    names = list(FORMATS)
    return [
        click.option("--to", "write_format", type=click.Choice(names), metavar="FORMAT",
                     help="Write FORMAT (default: from the file extension; JSON on stdout; "
                          "Kafka: payloads as read, or one Avro OCF per record)."),
        click.option("-F", "--format-template", "template", metavar="TEMPLATE",
                     help="One line per record, like kcat -f: %t topic, %p partition, %o "
                          "offset, %k key, %T timestamp, %h headers, %s value (decoded JSON), "
                          "%S/%K sizes, e.g. -F '%p %o %k %s'."),
        click.option("--schema-id", type=int, metavar="N",
                     help="Registry id of --schema (for --to confluent); without --schema, "
                          "the schema of that id (Rubin's, major*100+minor, resolve offline)."),
        click.option("--bytes", "bytes_mode", metavar="|".join(BYTES_MODES) + "|file:DIR",
                     help="How bytes fields (cutouts) appear in JSON; file:DIR writes each to "
                          "DIR/<candid or diaSourceId>.<field>.fits, gunzipped; summary "
                          "writes e.g. \"<13,958 bytes gzip FITS>\" [default: summary on a "
                          "terminal, else base64]."),
        click.option("--codec", type=click.Choice(CODECS),
                     help="Compress the Avro container files written (.avro files, tar "
                          "members) [default: null; tar members read as OCF pass unchanged]."),
        click.option("--json-style", type=click.Choice(JSON_STYLES), default="kcp",
                     show_default=True,
                     help="kcp: readable JSON for jq; avro: the Avro spec's JSON encoding "
                          "(written by the Python codec)."),
        click.option("--raw", is_flag=True,
                     help="Pass payloads through undecoded, one per line (like kcat)."),
        click.option("--envelope", is_flag=True,
                     help="Files and pipes hold whole Kafka messages as JSON Lines (topic, "
                          "partition, offset, timestamp, key, headers, value, payload)."),
        click.option("--pretty/--compact", default=None,
                     help="Indented JSON or one line per record on stdout [default: indented "
                          "and coloured on a terminal; files, pipes and Kafka always get one "
                          "line per record]."),
        click.option("--authority", show_default=DEFAULT_AUTHORITY, metavar="IVO://AUTHORITY",
                     help="VOEvent: the IVORN of an alert written as VOEvent is AUTHORITY#ID."),
        click.option("--cutouts", type=click.Choice(CUTOUT_POLICIES), show_default=DEFAULT_CUTOUTS,
                     help="VOEvent: an alert's cutouts left out, named (file name and size), "
                          "or embedded as base64."),
    ]


READ_FORMAT = _read_format_options()
WRITE_FORMAT = _write_format_options()


def _tar_write_options() -> list[Callable[..., Any]]:
    from .formats import FORMATS

    member_formats = [name for name, fmt in FORMATS.items() if fmt.extensions]
    return [
        click.option("--member-format", type=click.Choice(member_formats), metavar="FORMAT",
                     help="Tar destination: the format of the members written, one per record: "
                          + ", ".join(member_formats) + " [default: avro]."),
        click.option("--name", "member_name", metavar="TEMPLATE",
                     help="Tar destination: member names, e.g. '{objectId}_{candid}' [default: "
                          "candid (ZTF), diaSourceId or alertId (Rubin), else "
                          "{topic}-{partition}-{offset}, -{record} added for each of several "
                          "records of one message]."),
    ]


TAR_WRITE = _tar_write_options()
FILTER = [
    click.option("--where", "where", multiple=True, metavar="EXPR",
                 help="Keep records for which EXPR is true, e.g. "
                      "'candidate.rb > 0.5 and candidate.magpsf < 19' (docs/filtering.md). "
                      "Records are then decoded by the Python codec, as with --map and "
                      "--pipe-through (docs/performance.md)."),
    click.option("--map", "map_", multiple=True, metavar="TARGET",
                 help="Run each record through a function: MODULE:FUNCTION, "
                      "FILE.py:FUNCTION or an installed plugin (kcp plugins). It returns "
                      "the record, None to drop it, or several records."),
    click.option("--pipe-through", multiple=True, metavar="'CMD ARGS'",
                 help="Stream records as JSON Lines through a program that answers one "
                      "line (the record, or null) per line."),
    click.option("--out-schema", "out_schema_path", metavar="FILE",
                 help="The Avro schema of what --map/--pipe-through return (by default "
                      "the input schema, extended with the module's OUTPUT_FIELDS)."),
    click.option("--pipe-timeout", type=float, default=30.0, show_default=True,
                 metavar="SECONDS", help="How long --pipe-through may take per record."),
    click.option("--fields", metavar="PATH,...",
                 help="Keep only these dotted fields, e.g. objectId,candidate.ra,candidate.dec "
                      "(the output is then plain JSON, not Avro; the native codec reads past "
                      "the others)."),
    click.option("--since", metavar="TIME",
                 help="Only records from TIME on: ISO-8601, epoch ms, or relative "
                      "(-10m, -2h)."),
    click.option("--until", metavar="TIME", help="Only records before TIME (as --since)."),
]
FORCE = [
    click.option("--force", is_flag=True, help="Write binary data even to a terminal."),
]
PAGER = [
    click.option("--pager/--no-pager", default=True,
                 help="On a terminal, show long output through $PAGER (less by default; "
                      "never when following, nor into a pipe or file)."),
]
OUTCOME = [
    click.option("--on-error", default="fail", show_default=True,
                 metavar="fail|skip|dead-letter:PATH",
                 help="What a bad record does: stop (exit 3), be skipped and counted, or be "
                      "kept raw with its metadata as JSON Lines in PATH."),
    click.option("--progress", is_flag=True, default=None,
                 help="Show the live count and final summary on stderr (by default they "
                      "show when stderr is a terminal and the data goes elsewhere)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress and no summary."),
]
MONITOR = [
    click.option("--metrics-port", metavar="[HOST:]PORT",
                 help="Serve Prometheus metrics (records, bytes, errors, lag, age of the "
                      "last message, open archives) on this port."),
    click.option("--stats-interval", type=float, metavar="SECONDS",
                 help="Write a one-line JSON summary to stderr every SECONDS."),
]
DEBUG = [
    click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug,
                 help="Show tracebacks and the Kafka client's log."),
]
FILE_WRITE = [
    click.option("--partition-by", metavar="FIELD",
                 help="Write a folder of files, one subfolder FIELD=VALUE per value of a "
                      "record field (Hive layout), e.g. night.parquet --partition-by "
                      "candidate.fid."),
]
PACE = [
    click.option("--pace", metavar="original|Nx|N/s",
                 help="Replay at the records' own cadence (ZTF candidate.jd, Rubin "
                      "diaSource.midpointMjdTai, else the Kafka timestamp), N times "
                      "faster, or N records a second."),
]
# What every command reading records into records takes, around its own options
READING = (CONNECTION, GROUP, POSITION, COUNT, HEARTBEAT, JOBS, READ_FORMAT, WRITE_FORMAT, FILTER,
           FORCE, PACE)
RUNNING = (OUTCOME, MONITOR, DEBUG)


STEP_OPTIONS = {"where": "where", "map_": "map", "pipe_through": "pipe"}


class KcpCommand(click.Command):
    """A command that remembers the order its --where/--map/--pipe-through were given in."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
            ctx.meta["kcp.step_order"] = [p.name for p in order
                                          if isinstance(p, click.Option)
                                          and p.name in STEP_OPTIONS]
        return super().parse_args(ctx, args)


def _steps(kw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The pipeline steps in command-line order."""
    ctx = click.get_current_context(silent=True)
    order = ctx.meta.get("kcp.step_order", []) if ctx else []
    values = {name: list(kw.get(name) or ()) for name in STEP_OPTIONS}
    order = order or [name for name in STEP_OPTIONS for _ in values[name]]
    return tuple((STEP_OPTIONS[name], values[name].pop(0)) for name in order)


def _options(kw: dict[str, Any], **settings: Any) -> Any:
    """The library's Options from a command's keyword arguments: click's names are the
    Options fields; what is not given keeps the library's default."""
    import dataclasses

    from .codec.limits import Limits
    from .options import Options

    names = {f.name for f in dataclasses.fields(Options)}
    given = {name: value for name, value in kw.items()
             if name in names and value is not None and value != ()}
    limits = {f.name: kw[f.name] for f in dataclasses.fields(Limits) if kw.get(f.name)}
    return Options(steps=_steps(kw), limits=Limits(**limits), **given, **settings)


def _move(sources: list[str], destination: str, kw: dict[str, Any], **settings: Any) -> None:
    """Copy every record of ``sources`` to ``destination``: the plan does the whole job."""
    from .plan import plan

    click.get_current_context().find_root().meta["kcp.destination"] = (
        "<stdout>" if destination == "-" else destination)
    plan(sources, destination, _options(kw, **settings)).execute()


def _complete_addresses(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Topic names from the broker (one second at most), then files."""
    from click.shell_completion import CompletionItem

    from .plan import complete_topics

    return [CompletionItem(name) for name in complete_topics(incomplete)] + [
        CompletionItem(incomplete, type="file")]


BASH_COMPLETION = r"""
%(complete_func)s() {
    local IFS=$'\n' response completion type value
    local line=${COMP_LINE:0:$COMP_POINT}
    # bash splits BROKER:TOPIC at ':' (COMP_WORDBREAKS) and replaces only what follows the
    # last ':', so the answers lose the word's part up to it.
    local word=${line##*[[:space:]]} before=""
    if [[ $COMP_WORDBREAKS == *:* && $word == *:* ]]; then before=${word%%:*}:; fi
    response=$(env COMP_LINE="$line" %(complete_var)s=bash_complete $1)
    COMPREPLY=()
    for completion in $response; do
        IFS=',' read -r type value <<< "$completion"
        case $type in
            plain) COMPREPLY+=("${value#"$before"}") ;;
            file|dir) compopt -o filenames 2>/dev/null  # compgen -f or -d
                for value in $(compgen -"${type:0:1}" -- "$value"); do
                    COMPREPLY+=("${value#"$before"}")
                done ;;
        esac
    done
    return 0
}

complete -o nosort -F %(complete_func)s %(prog_name)s
"""


class BashCompletion(BashComplete):
    """click's bash completion with topics and files offered together (click's script drops
    the topics when a file entry follows them), and BROKER:TOPIC taken whole although bash
    splits words at ':'."""

    source_template = BASH_COMPLETION

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ["COMP_LINE"]
        words = split_arg_string(line)
        if not line or line[-1].isspace():  # a new word begins at the cursor
            return words[1:], ""
        return words[1:-1], words[-1]


add_completion_class(BashCompletion, "bash")


def _to_terminal() -> bool:
    from .environment import Environment

    return Environment.from_process().stdout_isatty


class KcpGroup(click.Group):
    """click, with every outcome reported in kcp's way: one line, a documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, KeyboardInterrupt, Terminated) as error:  # the one error boundary
            sys.exit(_exit_status(error, ctx))

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.ctx.get_help() if error.ctx else str(error))
            sys.exit(int(ExitStatus.USAGE_ERROR))
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx else "kcp"
            message = " ".join(error.format_message().split())
            click.echo(f"kcp: {message} (see '{where} --help')", err=True)
            sys.exit(int(ExitStatus.USAGE_ERROR))
        except click.ClickException as error:
            click.echo(f"kcp: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("kcp: interrupted", err=True)
            sys.exit(int(ExitStatus.INTERRUPTED))
        sys.exit(result if isinstance(result, int) else int(ExitStatus.OK))


# -- the commands -------------------------------------------------------------------------------
@click.group(cls=KcpGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.version_option(__version__, prog_name="kcp",
                      message=f"%(prog)s %(version)s ({codec_name()})")
@click.pass_context
def main(ctx: click.Context) -> None:
    """kcp: netcat for Kafka/Avro. Move astronomical alert streams (ZTF, Rubin, GCN) between
    Kafka topics, files and pipes, decoding every Avro framing they use.

    \b
    Examples:
      kcp tail ztf_20180725_programid1 | jq .candidate.magpsf
      kcp consume ztf_20180725_programid1 -c 3
      kcp produce ztf_20180725_programid1 alerts/*.avro
      kcp cp ztf:ztf_20180725_programid1 night.avro
    """
    from .config import Config

    defaults = Config.load().defaults
    # The config file's [defaults] become every command's option defaults: the command line
    # still wins over them.
    names = {"bytes": "bytes_mode", "json_style": "json_style", "timeout": "timeout",
             "on_error": "on_error"}
    ctx.default_map = {command: {names[k]: v for k, v in defaults.items()}
                       for command in main.commands}


@main.command(cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("topic", shell_complete=_complete_addresses)
@click.argument("files", nargs=-1, type=click.Path())
@click.option("-k", "--key", "message_key", metavar="KEY",
              callback=lambda _context, _option, key: None if key is None else key.encode(),
              help="The key of every message sent.")
@click.option("-H", "--header", "message_headers", multiple=True, metavar="NAME=VALUE",
              callback=_headers, help="A header added to every message sent (repeatable).")
@click.option("-p", "--partition", "to_partition", type=click.IntRange(min=0), metavar="N",
              help="Send every message to partition N [default: by key, else spread].")
@options(CONNECTION, COUNT, READ_FORMAT, WRITE_FORMAT, PACE, *RUNNING)
def produce(topic: str, files: tuple[str, ...], **kw: Any) -> None:
    """Send records to TOPIC from FILES (or stdin), one message per record.

    Avro files (OCF, one or many records each) become one OCF per message, the way ZTF sends
    alerts; JSON Lines need --schema. Exits non-zero, naming them, if any delivery failed.

    \b
    Examples:
      kcp produce ztf_20180725_programid1 night.avro
      kcp produce local:test alerts/*.avro
      kcp consume T | kcp produce T2 --schema alert.avsc
      kcp produce rubin:alerts --to confluent --schema v7_4/ --schema-id 704 < a.jsonl
    """
    _move(list(files) or ["-"], _as_topic(topic), kw)


def _as_topic(text: str) -> str:
    from .config import Config
    from .plan import address_of

    if address_of(text, Config.load()).kind != "kafka":
        raise UsageError(f"{text}: not a topic (a TOPIC, NAME:TOPIC or kafka:// address)")
    return text


@main.command(cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("topic", shell_complete=_complete_addresses)
@click.option("-f", "--follow", is_flag=True, help="Keep waiting for new records at the end.")
@click.option("-e", "--exit-at-end", is_flag=True,
              help="Stop at the end (the default; kcat's -e).")
@options(*READING, PAGER, *RUNNING)
def consume(topic: str, follow: bool, exit_at_end: bool, **kw: Any) -> None:
    """Read TOPIC from the beginning to its current end as JSON Lines on stdout.

    \b
    Examples:
      kcp consume ztf_20180725_programid1 -c 3 | jq '.candidate | {ra, dec, magpsf}'
      kcp consume ztf_20180725_programid1 -o -100 --bytes size
      kcp consume -g mygroup ztf_20180725_programid1 -f
      kcp consume rubin:alerts --schema-dir lsst/schema
    """
    if follow and exit_at_end:
        raise UsageError("-f follows, -e stops at the end: give one")
    _move([_as_topic(topic)], "-", kw, follow=follow)


@main.command(cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("topic", shell_complete=_complete_addresses)
@click.option("-n", "--lines", "last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Start with the last N records of each partition.")
@click.option("-e", "--exit-at-end", is_flag=True, help="Stop at the end instead of following.")
@options(*READING, *RUNNING)
def tail(topic: str, last: int, exit_at_end: bool, **kw: Any) -> None:
    """Follow TOPIC like tail -f: new records as JSON Lines until Ctrl-C.

    \b
    Examples:
      kcp tail ztf_20180725_programid1 | jq .candidate.magpsf
      kcp tail -n 5 -e ztf_20180725_programid1
    """
    _move([_as_topic(topic)], "-", kw, default_offset="end", follow=not exit_at_end,
          tail_count=None if kw.get("offset") else last)


@main.command(cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("addresses", nargs=-1, required=True, metavar="SRC... DST",
                shell_complete=_complete_addresses)
@click.option("-f", "--follow", is_flag=True, help="Keep copying new records from topics.")
@click.option("-n", "--no-clobber", is_flag=True,
              help="Refuse to replace an existing DST file (by default it is replaced, once "
                   "the copy is complete; until then the copy is DST.part).")
@click.option("--keep-partition", is_flag=True,
              help="Topic to topic: write each record to the partition it came from.")
@click.option("--rename", metavar="TEMPLATE",
              help="Mirroring to a broker (DST is BROKER:): name each copy from its source "
                   "topic, e.g. 'mirror_{topic}' (default: the same name).")
@click.option("--exactly-once", is_flag=True,
              help="Topic to topic in transactions of the destination that also hold the "
                   "source positions (needs -g): read_committed readers see each record once, "
                   "even across crashes and between clusters.")
@click.option("--idle", "idle_seconds", metavar="DURATION", callback=_duration,
              help="Archives per topic (DST 'DIR/{topic}.tar.gz'): finalise a topic's archive "
                   "once the topic has had no record for DURATION, e.g. 30m, 90s [default: at "
                   "the end of the run].")
@options(*READING, TAR_WRITE, FILE_WRITE, PAGER, *RUNNING)
def cp(addresses: tuple[str, ...], follow: bool, **kw: Any) -> None:
    """Copy records from every SRC to DST: topics, files, globs, stdin/stdout (-).

    Formats follow the extensions (or --from/--to). Topic to topic copies payloads, keys,
    headers and timestamps unchanged unless asked to convert.

    \b
    Examples:
      kcp cp ztf:ztf_20180725_programid1 night.avro
      kcp cp night.avro local:ztf_20180725_programid1
      kcp cp 'alerts/*.avro' night.jsonl
      kcp cp -g backup ztf:ztf_20180725_programid1 local:ztf_20180725_programid1
      kcp cp -f -g mirror 'ztf:^ztf_.*' local:          # mirror every night, new ones too
      kcp cp -f -g archiver 'ztf:^ztf_.*' 'archive/{topic}.tar.gz' --idle 30m
    """
    if len(addresses) < 2:
        raise UsageError("cp needs a source and a destination: kcp cp SRC... DST")
    *sources, destination = addresses
    _move(sources, destination, kw, follow=follow)


@main.command(cls=KcpCommand, epilog=EXIT_STATUS_TEXT)
@options(COUNT, READ_FORMAT, WRITE_FORMAT, FILTER, FORCE, PAGER, OUTCOME, DEBUG)
def convert(**kw: Any) -> None:
    """Convert records from stdin to stdout: the format-changing stage of a Unix pipe.

    The input format is detected (Avro in any framing, JSON Lines) unless --from says;
    the output is JSON Lines unless --to says.

    \b
    Examples:
      kcp convert < night.avro | jq .objectId
      kcp consume T --raw | kcp convert --from ocf
      kcp convert --to avro --schema alert.avsc < alerts.jsonl > alerts.avro
    """
    _move(["-"], "-", kw)


@main.command(cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("sources", nargs=-1, metavar="[SOURCE]...", shell_complete=_complete_addresses)
@click.option("--all", "every", is_flag=True,
              help="Read everything; list each distinct schema with its count, "
                   "fingerprint and registry id.")
@options(CONNECTION, POSITION, READ_FORMAT, OUTCOME, DEBUG)
def schema(sources: tuple[str, ...], every: bool, **kw: Any) -> None:
    """Print the Avro writer schema of the SOURCEs (topics, files, globs; stdin without any):
    of the first record, or with --all every distinct one.

    \b
    Examples:
      kcp schema ztf_20180725_programid1 | jq .fields[].name
      kcp schema --all alerts/*/*.avro
      kcp schema rubin:alerts --schema-dir lsst/schema
    """
    import orjson

    from .plan import schema_census

    census = schema_census(list(sources) or ["-"], _options(kw, count=None if every else 1))
    out = sys.stdout.buffer
    if every:
        for found, count in census:
            out.write(orjson.dumps({"name": found.name, "fingerprint": f"{found.fingerprint:016x}",
                                    "id": found.registry_id, "count": count,
                                    "schema": found.definition}) + b"\n")
    else:
        found = census[0][0]
        out.write(orjson.dumps(found.definition, option=orjson.OPT_INDENT_2) + b"\n")
    out.flush()


@main.command("ls", cls=KcpCommand, epilog=ADDRESS_TEXT + "\n\n" + EXIT_STATUS_TEXT)
@click.argument("broker_pattern", required=False, metavar="[BROKER[:PATTERN]]")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@options(CONNECTION, DEBUG)
def list_topics(broker_pattern: str | None, as_json: bool, **kw: Any) -> None:
    """List the topics of a broker: partitions, messages (committed ones; "<=N" where
    aborted transactions may hide among them), the times of the first and last (UTC).

    \b
    Examples:
      kcp ls
      kcp ls ztf:'^ztf_2018'
      kcp ls localhost:9092 --json | jq -r .topic
    """
    import orjson

    from .plan import describe_topics

    rows = describe_topics(broker_pattern, _options(kw))
    out = sys.stdout.buffer
    if as_json or not _to_terminal():
        for row in rows:
            out.write(orjson.dumps(row) + b"\n")
        out.flush()
        return
    # "messages": committed records; "<=N" where aborted transactions may hide among them
    click.echo(_table(["topic", "partitions", "messages", "first (UTC)", "last (UTC)"], [
        [r["topic"], r["partitions"], r["messages"] if r["exact"] else f"<={r['messages']}",
         _iso(r["first"]), _iso(r["last"])]
        for r in rows]))


def _iso(milliseconds: int | None) -> str:
    from datetime import UTC, datetime

    if milliseconds is None:
        return "-"
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.rjust(w) if n else c.ljust(w)
                               for c, w, n in zip(row, widths, numeric, strict=True)).rstrip())
    return "\n".join(lines)


@main.command(cls=KcpCommand, epilog=EXIT_STATUS_TEXT)
@click.argument("group_address", metavar="[BROKER:]GROUP")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@options(CONNECTION, DEBUG)
def lag(group_address: str, as_json: bool, **kw: Any) -> None:
    """How far a consumer group is behind: per topic and partition the committed offset, the
    end offset, the lag in messages and in time (the age of the oldest unread message).

    \b
    Examples:
      kcp lag mirror
      kcp lag ztf:archiver --json | jq 'select(.lag > 1000)'
    """
    import orjson

    from .plan import group_lag

    rows = group_lag(group_address, _options(kw))
    if as_json or not _to_terminal():
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        return
    click.echo(_table(["topic", "partition", "committed", "end", "lag", "lag (s)"], [
        [r["topic"], r["partition"], "-" if r["committed"] is None else r["committed"],
         r["end"], r["lag"], "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}"]
        for r in rows]))


@main.group("config")
def config_group() -> None:
    """Show the configuration kcp uses, and where its file is.

    \b
    Examples:
      kcp config path
      kcp config show | jq .brokers
    """


@config_group.command("path")
def config_path_command(**kw: Any) -> None:
    """Print the path of the configuration file (it may not exist yet)."""
    from .config import config_path

    click.echo(str(config_path()))


@config_group.command("show")
def config_show(**kw: Any) -> None:
    """Print the effective configuration as JSON, passwords and tokens masked.

    Precedence: the command line, then the environment (KCP_BROKER), then the file, then
    built-in defaults.
    """
    import orjson

    from .config import Config

    sys.stdout.buffer.write(orjson.dumps(Config.load().effective(),
                                         option=orjson.OPT_INDENT_2) + b"\n")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, topic names).

    \b
    Examples:
      kcp completion bash > ~/.local/share/bash-completion/completions/kcp
      kcp completion zsh > "${fpath[1]}/_kcp"
      kcp completion fish > ~/.config/fish/completions/kcp.fish
    """
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None
    click.echo(complete(main, {}, "kcp", "_KCP_COMPLETE").source())


@main.command(cls=KcpCommand)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
def plugins(as_json: bool, **kw: Any) -> None:
    """List the stages (for --map NAME) that installed packages offer through the entry point
    group kcp.stages.v1.

    \b
    Examples:
      kcp plugins
      kcp cp T local:flagged --map fast-risers
    """
    import orjson

    from .plugins import STAGE_GROUP, installed

    rows = [{"kind": "stage", "name": name, "target": entry.value,
             "package": entry.dist.name if entry.dist else None}
            for name, entry in sorted(installed(STAGE_GROUP).items())]
    if as_json or not _to_terminal():
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        return
    if not rows:
        click.echo("no plugins installed (entry point group kcp.stages.v1)")
        return
    click.echo(_table(["kind", "name", "target", "package"],
                      [[r["kind"], r["name"], r["target"], r["package"] or "-"] for r in rows]))


if __name__ == "__main__":  # pragma: no cover
    main()
