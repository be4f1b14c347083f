"""Generate man/kcp.1 and man/kcp-COMMAND.1 from the click command tree (`make man`).

The --help texts are the source of truth; these pages are derived from them and committed.
tests/test_man.py regenerates them and fails when the committed ones are stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from kcp import __version__
from kcp.cli import main
from kcp.errors import EXIT_STATUS_HELP

MAN = Path(__file__).resolve().parent.parent / "man"

ENVIRONMENT = [
    ("KCP_BROKER", "The default broker (host:port or a configured alias) for bare topic names."),
    ("KCP_CONFIG", "The configuration file to read instead of the default one."),
    ("NO_COLOR", "When set, JSON on a terminal is not coloured."),
]
FILES = [
    ("~/.config/kcp/config.toml",
     "The configuration file (the platform's user config folder; see kcp config path): "
     "default_broker, [brokers.NAME] aliases with bootstrap, any librdkafka property and "
     "password_file or password_env, and [defaults] for bytes, json_style, timeout, on_error."),
]


def roff(text: str) -> str:
    """Plain text made safe for roff."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def paragraphs(help_text: str) -> tuple[list[str], list[str]]:
    """(description paragraphs, example lines) of a click help text."""
    description, examples = [], []
    for block in re.split(r"\n\s*\n", help_text.strip()):
        lines = [line for line in block.splitlines() if line.strip() != "\b"]
        if lines and lines[0].strip() == "Examples:":
            examples += [line.strip() for line in lines[1:] if line.strip()]
        elif block.lstrip().startswith("\b"):
            description.append(".nf\n" + roff("\n".join(lines)) + "\n.fi")
        else:
            description.append(roff(" ".join(line.strip() for line in lines)))
    return description, examples


def option_entries(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or not isinstance(param, click.Option):
            continue
        names, text = record
        out += [".TP", f"\\fB{roff(names)}\\fR", roff(text)]
    return out


def summary(name: str, command: click.Command) -> str:
    """What ``command`` does, whole: the first sentence of its help (click's short help cuts it
    at a width), without a leading "kcp:" that the NAME line already says."""
    paragraph = re.split(r"\n\s*\n", (command.short_help or command.help or "").strip())[0]
    text = " ".join(paragraph.split())
    first = re.split(r"(?<=[.])\s+(?=[A-Z])", text, maxsplit=1)[0] if text else ""
    return first.removeprefix(f"{name}: ").rstrip(".")


def page(name: str, title: str, command: click.Command, ctx: click.Context) -> str:
    usage = " ".join(command.collect_usage_pieces(ctx))
    description, examples = paragraphs(command.help or "")
    lines = [f'.TH {roff(title)} 1 "" "kcp {__version__}" "kcp manual"', ".SH NAME",
             f"{roff(name)} \\- {roff(summary(name, command))}", ".SH SYNOPSIS",
             f"\\fB{roff(name)}\\fR {roff(usage)}", ".SH DESCRIPTION"]
    for paragraph in description:
        lines += [paragraph, ".PP"]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub_name, sub in sorted(command.commands.items()):
            lines += [".TP", f"\\fB{roff(name)} {roff(sub_name)}\\fR",
                      roff(summary(sub_name, sub) + ".")]
    options = option_entries(command, ctx)
    if options:
        lines += [".SH OPTIONS", *options]
    if examples:
        lines += [".SH EXAMPLES", ".nf", *(roff(e) for e in examples), ".fi"]
    lines.append(".SH ENVIRONMENT")
    for variable, text in ENVIRONMENT:
        lines += [".TP", f"\\fB{variable}\\fR", roff(text)]
    lines.append(".SH FILES")
    for path, text in FILES:
        lines += [".TP", f"\\fI{roff(path)}\\fR", roff(text)]
    lines.append(".SH EXIT STATUS")
    for status, text in EXIT_STATUS_HELP.items():
        lines += [".TP", f"\\fB{int(status)}\\fR", roff(text)]
    others = ", ".join(f"\\fBkcp\\-{roff(n)}\\fR(1)" for n in sorted(main.commands))
    lines += [".SH SEE ALSO", others, ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """Every man page kcp has, by file name."""
    # make_context applies the group's context_settings (-h as well as --help), as a run does.
    root = main.make_context("kcp", [], resilient_parsing=True)
    out = {"kcp.1": page("kcp", "KCP", main, root)}
    for name, command in main.commands.items():
        ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
        out[f"kcp-{name}.1"] = page(f"kcp {name}", f"KCP-{name.upper()}", command, ctx)
    return out


def main_() -> int:
    MAN.mkdir(exist_ok=True)
    for stale in MAN.glob("*.1"):
        stale.unlink()
    for file_name, text in pages().items():
        (MAN / file_name).write_text(text)
    print(f"wrote {len(pages())} man pages to {MAN}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main_())
