"""One tar archive per topic: the archiver, ``kcp cp -f -g archiver 'ztf:^ztf_.*'
'archive/{topic}.tar.gz' --idle 30m``.

A file destination holding ``{topic}`` fans out: each topic's records go to an archive of their
own in ZTF's layout (a :class:`kcp.transports.tar.TarSink`), opened at the topic's first record.
An archive is finalised (closed, renamed from ``NAME.part`` to ``NAME``) once its topic has had
no record for ``--idle`` seconds, and in any case when the run ends. ZTF publishes a topic per
night, so that is one archive per night, finished soon after the night ends.

Archives merge by member name (``TarSink(merge=True)``): a rerun after a crash continues the
``NAME.part`` the crash left (cutting its torn tail), late records for a finalised night continue
its ``NAME``, and a record whose member is already there (delivered again because its offset was
not committed before the crash) is skipped. Members are named by candid (ZTF) or diaSourceId
(Rubin), unique per alert, so each alert is archived exactly once.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import string
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..address import Address
from ..config import Config
from ..contracts import SinkTraits
from ..errors import BadInput, UsageError
from ..message import Message
from ..options import Options
from .tar import MemberNames, TarSink, compression_of, member_format

FIELD = "topic"
# The characters of a Kafka topic name: what {topic} matches when a crash's NAME.part is found.
_TOPIC_NAME = r"[A-Za-z0-9._-]+"
# How often archives are checked for idleness (at most): a check is a pass over the open ones.
IDLE_CHECK_SECONDS = 0.5


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while archives are flushed or finalised.

    The pipeline defers them only while a record is in hand; one landing inside a gzip flush
    or close (a checkpoint, an idle archive finalised) would leave that stream with a hole. Held
    back here, the signal is raised again, to whatever handled it before, once the archives are
    consistent. Python's handlers are swapped rather than the signals masked: a mask holds only
    the thread that sets it, and the metrics server's thread would still take the signal.
    """
    wanted = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or any(
            signal.getsignal(s) is None for s in wanted):  # handlers not set from Python
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum))
                for s in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])


class ArchiveSink:
    """A tar archive per topic, named by a path template holding ``{topic}``."""

    # Members are named from their records (TarSink): -j workers hand decoded records.
    traits = SinkTraits()

    def __init__(self, template: str, options: Options, idle_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        folder = _check_template(template, options)
        self.template = template
        self._lock = _lock_folder(folder, template)
        self.options = options
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.archives: dict[str, TarSink] = {}
        self.last_record: dict[str, float] = {}  # per open archive, by the clock
        self.finalised = 0
        self.duplicates = 0  # records skipped because their member was already archived
        self._next_idle_check = 0.0
        try:
            self._take_up_parts()
        except BaseException:
            self.close()
            raise

    @property
    def open_archives(self) -> int:
        """Archives being written (the kcp_open_archives gauge)."""
        return len(self.archives)

    def path_of(self, topic: str) -> Path:
        return Path(string.Formatter().vformat(self.template, (), {FIELD: topic}))

    def _take_up_parts(self) -> None:
        """Open the ``NAME.part`` archives a crash left, as if a record had just come.

        A crash after a night's last records were committed, but before its archive was
        finalised, leaves a NAME.part that no record would ever reopen: taken up here, it is
        finalised after --idle, or at the end, like the others.
        """
        pieces = [str(piece) for piece in str(self.path_of("\0")).split("\0")]
        pattern = glob.escape(pieces[0]) + "".join("*" + glob.escape(p) for p in pieces[1:])
        topic = re.escape(pieces[0]) + f"(?P<topic>{_TOPIC_NAME})" + "".join(
            re.escape(p) + ("(?P=topic)" if i < len(pieces) - 2 else "")
            for i, p in enumerate(pieces[1:]))
        for found in sorted(glob.glob(pattern + ".part")):
            named = re.fullmatch(topic + r"\.part", found)
            if named is not None and named["topic"] not in (".", ".."):
                self._open(named["topic"])

    def write(self, message: Message) -> None:
        topic = message.topic
        if topic is None:
            raise UsageError(f"{self.template}: {{topic}} names an archive per Kafka topic, and "
                             f"{message.where()} comes from no topic")
        if topic in (".", "..") or "/" in topic or "\0" in topic:
            raise BadInput(f"topic {topic!r} cannot name a file")  # Kafka forbids these anyway
        archive = self.archives.get(topic) or self._open(topic)
        archive.write(message)
        self.last_record[topic] = self.clock()
        self._finalise_idle()

    def _open(self, topic: str) -> TarSink:
        path = self.path_of(topic)
        # Only the part of the path below {topic} is made: the folder the template starts in
        # was checked to exist (a typo there should fail, not grow a new tree).
        path.parent.mkdir(parents=True, exist_ok=True)
        archive = self.archives[topic] = TarSink(str(path), self.options, merge=True)
        self.last_record[topic] = self.clock()
        return archive

    def idle(self) -> None:
        self._finalise_idle()

    def _finalise_idle(self) -> None:
        if self.idle_seconds is None:
            return
        now = self.clock()
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + min(IDLE_CHECK_SECONDS, self.idle_seconds / 4)
        quiet = [t for t, last in self.last_record.items() if now - last >= self.idle_seconds]
        if quiet:
            with _signals_held():
                for topic in quiet:
                    self._finalise(topic)

    def _finalise(self, topic: str) -> None:
        archive = self.archives.pop(topic)
        del self.last_record[topic]
        self.duplicates += archive.duplicates
        archive.close()
        self.finalised += 1

    def flush(self) -> None:
        with _signals_held():
            for archive in self.archives.values():
                archive.flush()

    def copies_from(self, source: object) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        """Finalise every open archive, also after an interruption (each is whole at a
        checkpoint; the rest of a night comes with the next run, merged by member name). The
        first failure is raised once all were tried (an archive that failed keeps its NAME.part
        for the next run to continue)."""
        failure: BaseException | None = None
        with _signals_held():
            for topic in list(self.archives):
                try:
                    self._finalise(topic)
                except Exception as exc:  # the others are still finalised
                    failure = failure or exc
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if failure is not None:
            raise failure


def _check_template(template: str, options: Options) -> str:
    """Refuse now what the first record of each topic would refuse later; return the folder
    the template starts in."""
    member_format(options)
    if MemberNames(options.member_name).numbered:
        raise UsageError(f"--name {options.member_name!r}: {{number}} restarts with each run, "
                         "so it cannot tell records already archived; name members by a field "
                         "(the default: candid)")
    try:
        fields = [(field, spec, conversion)
                  for _, field, spec, conversion in string.Formatter().parse(template)
                  if field is not None]
    except ValueError as exc:
        raise UsageError(f"{template}: {exc} (write a literal brace as {{{{ or }}}})") from None
    if any(f != (FIELD, "", None) for f in fields):
        raise UsageError(f"{template}: the only field an archive path may hold is {{topic}}")
    try:
        compression = compression_of(template)
    except UsageError:
        raise UsageError(f"{template}: {{topic}} makes one tar archive per topic: name a .tar or "
                         ".tar.gz (e.g. 'archive/{topic}.tar.gz')") from None
    if compression not in ("", "gz"):
        raise UsageError(f"{template}: archives per topic are .tar or .tar.gz (bzip2 and xz "
                         "streams cannot be made readable at each checkpoint)")
    # The folder the template starts in: os.path.dirname keeps "archive" of "archive/" and of
    # "archive/night_", where Path would not.
    folder = os.path.expanduser(os.path.dirname(template.split("{" + FIELD + "}", 1)[0]) or ".")
    if not os.path.isdir(folder):
        raise UsageError(f"{template}: no such folder {folder!r}")
    return folder


def _lock_folder(folder: str, template: str) -> int | None:
    """Hold a lock on the archive folder for as long as the process lives (a crash frees it).

    Two archivers writing one folder would write the same NAME.part (members of a topic split
    between two group members), and one would take up the other's as a crash's leftover.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one archiver per folder is then on the operator
        return None
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        raise UsageError(f"{template}: another kcp is archiving into {folder!r}; one archiver "
                         "per folder") from None
    return handle


def open_source(address: Address, options: Options, config: Config) -> None:
    raise UsageError(f"{address}: {{topic}} names archives to write; read them by name or glob, "
                     "e.g. 'archive/*.tar.gz'")


def open_sink(address: Address, options: Options, config: Config) -> ArchiveSink:
    path = os.path.expanduser(address.path or address.text)
    return ArchiveSink(path, options, options.idle_seconds)
