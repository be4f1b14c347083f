"""Tar archives of alerts, read and written as streams: ZTF's nightly archives and their like.

Reading (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, and any stream whose content
is a plain, gzip or xz tar, such as stdin): member by member, never extracted, never more than one
member in memory; nights reach tens of GB. Each regular member is one message whose source is
the archive and whose position is ``member NAME``; its format comes from its extension. An
``.avro`` member (ZTF: a single-record OCF named ``<candid>.avro``) is handed on as a payload, as a
Kafka message would be, so a night replayed into a topic carries each member's bytes unchanged;
``.fits``, ``.json`` and other members are decoded by their format's reader.

The archive is parsed here rather than by ``tarfile``, whose stream mode reads a PAX or GNU
long-name header into memory whole, however large it claims to be. Hostile archives are bad input
under ``--on-error``: a member named with ``..`` or an absolute path, a link, a device or a FIFO
(directories are skipped quietly), a member larger than ``--max-member-size``, a corrupt header
or compressed stream (which ends the archive). Nothing is ever written to disk while reading.

Writing: the ZTF archive layout, one member per record, ``<name>.avro`` holding a single-record
OCF with the record's own schema (or ``.fits``/``.json``... with ``--member-format``), named by
``--name TEMPLATE``; regular files, mode 0644, owned by 0/0, mtime from the message timestamp.
Compression follows the extension and is streamed. The archive is written to ``NAME.part`` and
renamed at the end, like every file kcp writes. With a consumer group an uncompressed ``.tar``
is continued after its last complete member; a compressed one cannot be, so a group copy into
one is refused. The per-topic archives of kcp.transports.archive merge instead (``merge=True``):
the complete members of the archive there is are copied into a new stream, and records whose
member names it already holds are skipped.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import string
import tarfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..address import Address
from ..codec.framing import OCF_MAGIC
from ..config import Config
from ..contracts import SinkTraits
from ..errors import BadInput, UsageError
from ..formats import FORMATS, Format, format_for_path, format_named
from ..message import Message
from ..options import Options
from .stream import PathSource

BLOCK = 512
RECORD = 20 * BLOCK  # tar archives are padded to whole records of 20 blocks
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"
GZIP_MAGIC = b"\x1f\x8b"
COMPRESSIONS = {".tar.gz": "gz", ".tgz": "gz", ".tar.bz2": "bz2", ".tar.xz": "xz", ".tar": ""}
# Header data (PAX records, GNU long names) are a few hundred bytes; a larger claim is hostile.
HEADER_DATA_LIMIT = 1 << 20
# The records' fields ZTF and Rubin identify alerts by: the default member name.
ID_FIELDS = ("candid", "diaSourceId", "alertId")
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
               tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_NOT_REGULAR = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
                tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                tarfile.FIFOTYPE: "a FIFO"}
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class _Truncated(Exception):
    pass


# -- reading -----------------------------------------------------------------------------------
def looks_like_tar(stream: BinaryIO) -> bool:
    """Whether a peekable stream holds a tar archive, plain, gzip- or xz-compressed (bzip2 only
    decompresses in whole 900 kB blocks: a .tar.bz2 is known by its name alone)."""
    head = stream.peek(BLOCK)[:4096]  # type: ignore[attr-defined]
    try:
        if head[:2] == GZIP_MAGIC:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, BLOCK)
        elif head[:6] == XZ_MAGIC:
            head = lzma.LZMADecompressor().decompress(head, BLOCK)
    except (zlib.error, lzma.LZMAError):
        return False
    if len(head) < BLOCK or head[257:262] != b"ustar":
        return False
    try:
        tarfile.TarInfo.frombuf(head[:BLOCK], "utf-8", "surrogateescape")  # checks the checksum
    except tarfile.HeaderError:
        return False
    return True


def _decompressed(stream: BinaryIO) -> BinaryIO:
    head = stream.peek(6)[:6]  # type: ignore[attr-defined]
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    if head[:3] == BZIP2_MAGIC:
        return bz2.BZ2File(stream)  # type: ignore[return-value]
    if head == XZ_MAGIC:
        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    return stream


def read_archive(stream: BinaryIO, name: str, options: Options) -> Iterator[Message]:
    """The messages of a tar archive read from a peekable stream, one member at a time."""
    readers: dict[str, Any] = {}
    members = _members(_decompressed(stream), options.max_member_bytes)
    while True:
        try:
            found = next(members)
        except StopIteration:
            return
        except (_Truncated, EOFError):  # EOFError: the compressed stream ends early
            yield _bad(name, None, "truncated archive: it ends inside a member")
            return
        except (OSError, zlib.error, lzma.LZMAError) as exc:
            yield _bad(name, None, f"corrupt compressed data ({exc})")
            return
        except BadInput as exc:
            yield _bad(name, None, exc.message)
            return
        member, data, problem = found
        if problem is not None:
            yield _bad(name, member.name, problem)
            continue
        # No timestamp from the member's mtime: replayed into Kafka, a night archived years ago
        # would be past the topic's retention, and deleted, within minutes.
        message = Message(value=data, source=name, position=f"member {member.name}")
        fmt = format_for_path(member.name)
        if options.read_format or fmt is None or fmt.name == "avro":
            yield message  # a payload, decoded (or not) downstream like a Kafka message
            continue
        reader = readers.get(fmt.name)
        if reader is None:
            reader = readers[fmt.name] = fmt.reader(options)
        try:
            yield from reader.decode(message)
        except BadInput as exc:
            message.error = exc.at(message.where())
            yield message


def _bad(archive: str, member: str | None, problem: str) -> Message:
    position = f"member {member}" if member is not None else None
    message = Message(source=archive, position=position)
    message.error = BadInput(problem).at(message.where())
    return message


def _members(stream: BinaryIO, limit: int
             ) -> Iterator[tuple[tarfile.TarInfo, bytes | None, str | None]]:
    """(header, data, None) for each regular member, (header, None, why) for each other one.

    Raises _Truncated, BadInput (a corrupt header) or the decompressor's errors, which end the
    archive.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    number = 0
    while True:
        block = stream.read(BLOCK)
        if not block or block == bytes(BLOCK):  # the end-of-archive blocks (or a bare end)
            return
        if len(block) < BLOCK:
            raise _Truncated
        try:
            member = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            what = "not a tar archive" if number == 0 else "corrupt tar header"
            raise BadInput(f"{what} ({exc})") from None
        number += 1
        if member.size < 0:  # possible in GNU's base-256 numbers; read(-n) would read it all
            raise BadInput(f"corrupt tar header ({member.name}: a negative size)")
        if member.type == tarfile.GNUTYPE_SPARSE:  # its data is a map kcp does not follow
            raise BadInput(f"{member.name}: a GNU sparse file; kcp reads regular members only")
        if member.type in _META_TYPES:
            if member.size > HEADER_DATA_LIMIT:
                raise BadInput(f"a tar extension header claims {member.size:,} bytes")
            data = _read(stream, member.size)
            if member.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif member.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                pax = _pax_records(data)
            continue  # a long link name or global PAX header changes nothing kcp reads
        _rename(member, pax, long_name)
        pax, long_name = {}, None
        problem = _problem(member, limit)
        if problem is None:
            yield member, _read(stream, member.size), None
        else:
            if not member.isdir():
                yield member, None, problem  # before skipping: the archive may end inside it
            # Like tar, links, devices and FIFOs have no data whatever size they claim.
            has_data = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
            _skip(stream, member.size + (-member.size % BLOCK) if has_data else 0)


def _rename(member: tarfile.TarInfo, pax: dict[str, str], long_name: str | None) -> None:
    """Give a member the name and size its GNU long-name or PAX header says."""
    if long_name is not None:
        member.name = long_name
    if "path" in pax:
        member.name = pax["path"]
    if "size" in pax:
        try:
            member.size = int(pax["size"])
        except ValueError:
            member.size = -1
        if member.size < 0:
            raise BadInput("corrupt PAX header (size)")


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``LENGTH KEY=VALUE\\n`` records of a PAX extended header."""
    records = {}
    position = 0
    while position < len(data) and data[position:position + 1] != b"\0":
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise BadInput("corrupt PAX header") from None
        if space < 0 or length <= space - position or position + length > len(data):
            raise BadInput("corrupt PAX header")
        key, _, value = data[space + 1:position + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def _problem(member: tarfile.TarInfo, limit: int) -> str | None:
    """Why a member is not read, or None."""
    if member.isdir():
        return "a directory"
    parts = member.name.replace("\\", "/").split("/")
    if member.name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", member.name):
        return "an unsafe member name (absolute, or with ..): not read"
    if not member.isreg():
        kind = _NOT_REGULAR.get(member.type, f"of type {member.type!r}")
        return f"{kind}, not a regular file: not read"
    if member.size > limit:
        return (f"{member.size:,} bytes, over the {limit:,}-byte limit: not read "
                "(--max-member-size)")
    return None


def _read(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes of data and the padding after them."""
    data = stream.read(size)
    if len(data) < size:
        raise _Truncated
    _skip(stream, -size % BLOCK)
    return data


def _skip(stream: BinaryIO, size: int) -> None:
    while size:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise _Truncated
        size -= len(chunk)


class TarSource(PathSource):
    """Tar archives named by a path or a glob, read one after the other."""

    def read_file(self, stream: BinaryIO, path: str) -> Iterator[Message]:
        return read_archive(stream, path, self.options)


# -- writing -----------------------------------------------------------------------------------
class MemberNames:
    """``--name TEMPLATE``: a member's name from its record and message (``{objectId}_{candid}``).

    A name in braces is the message's ``topic``, ``partition``, ``offset``, ``timestamp``,
    running ``number`` or ``record`` (the record's place in a message holding several: ``2``,
    ``1`` when it holds one), else a field of the record (dotted for nested ones:
    ``candidate.jd``), with an optional format spec (``{number:06d}``). Without a template: the
    record's ``candid`` (ZTF), ``diaSourceId`` or ``alertId`` (Rubin), else
    ``{topic}-{partition}-{offset}`` for Kafka messages (``-{record}`` added for each record of
    a message holding several: a 3-record OCF payload at offset 7 makes ``t-0-7-1`` to
    ``t-0-7-3``, the same names whenever it is read again), else ``{number}``.
    """

    METADATA = ("topic", "partition", "offset", "timestamp", "number", "record")

    def __init__(self, template: str | None) -> None:
        self.template = template
        # A name with the running {number} names a position in this run, not a record: a rerun
        # numbers from 1 again (archives that merge by name refuse it).
        self.numbered = False
        if template is not None:
            try:
                fields = [f for _, f, _, conversion in string.Formatter().parse(template)
                          if f is not None or conversion is not None]
            except ValueError as exc:
                raise UsageError(f"--name {template!r}: {exc}") from None
            for field in fields:
                if not field or not _FIELD_PATH.fullmatch(field):
                    raise UsageError(f"--name {template!r}: {{{field}}} is not a field name "
                                     "(letters, digits, _ and dots)")
            self.numbered = "number" in fields

    def __call__(self, message: Message, number: int) -> str:
        template = self.template or self._default(message)
        try:
            name = _NameFormatter().vformat(template, (), _Fields(message, number))
        except (ValueError, TypeError) as exc:
            raise BadInput(f"--name {template!r}: {exc}") from None
        name = re.sub(r"[\x00-\x1f/\\]", "_", name)
        if name in ("", ".", ".."):
            raise BadInput(f"--name {template!r} gives the member name {name!r}")
        return name

    @staticmethod
    def _default(message: Message) -> str:
        datum = message.datum if isinstance(message.datum, dict) else {}
        for field in ID_FIELDS:
            if datum.get(field) is not None:
                return f"{{{field}}}"
        if message.topic is None or message.partition is None or message.offset is None:
            return "{number}"
        if message.record is not None:
            return "{topic}-{partition}-{offset}-{record}"
        return "{topic}-{partition}-{offset}"


class _NameFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        return kwargs[field_name], field_name  # a dotted name is a path in the record


class _Fields(dict):
    """What a name template's fields look up: message metadata first, then the record."""

    def __init__(self, message: Message, number: int) -> None:
        super().__init__()
        self.message = message
        self.number = number

    def __missing__(self, path: str) -> Any:
        if path in MemberNames.METADATA:
            if path == "number":
                value = self.number
            elif path == "record":
                value = self.message.record or "1"
            else:
                value = getattr(self.message, path)
        else:
            value = self.message.datum
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            raise BadInput(f"no {path} to name the tar member by (--name)")
        return value


class TarSink:
    """Writes one member per record into a tar archive, streaming its compression.

    ``merge=True`` (the per-topic archives of kcp.transports.archive): the archive there is
    (``NAME.part`` a crash left, else a finished ``NAME``) is continued, compressed or not, and
    a record whose member name is already in it is skipped, so records delivered again after a
    crash, or late ones for a finished night, never make a second member. See ``_merge``.
    """

    # Members are named from their records: -j workers hand decoded records, not bytes.
    traits = SinkTraits()

    def __init__(self, path: str, options: Options, resume: bool = False,
                 merge: bool = False) -> None:
        self.final = Path(path)
        self.partial = self.final.with_name(self.final.name + ".part")
        compression = compression_of(path)
        self.format = member_format(options)
        self.writer = self.format.writer(options)
        self.extension = self.format.extensions[0]
        self.names = MemberNames(options.member_name)
        # Payloads pass as they are (ZTF's own single-record OCF) unless records were reshaped
        # or recompressed.
        self.pass_payloads = self.format.name == "avro" and options.schemas.reader is None \
            and options.fields is None and options.codec is None
        self.number = 0
        self.dirty = False  # written to since the last flush
        # merge: the names of the members in the archive, and the records skipped for them
        self.present: set[str] | None = None
        self.duplicates = 0
        if merge:
            self._merge(path, compression, options.max_member_bytes)
            return
        if resume and compression:
            raise UsageError(f"{path}: a copy with a consumer group resumes, and a compressed "
                             "tar cannot be continued; write an uncompressed .tar, or copy "
                             "without -g")
        if resume and not self.partial.exists() and self.final.exists():
            os.replace(self.final, self.partial)
        resuming = resume and self.partial.exists()
        try:
            self.file = open(self.partial, "r+b" if resuming else "wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
        self.size = cut_torn_tar_tail(self.file) if resuming else 0
        self.stream = _compressor(self.file, compression, self.final)

    def _merge(self, path: str, compression: str, limit: int) -> None:
        """Start ``NAME.part`` with every complete member of the archive there is, and remember
        their names.

        The archive there is: ``NAME.part`` if a crash left one (when ``NAME`` exists too, the
        part was made from it, so it holds all of NAME's members), else the finished ``NAME``.
        It cannot be continued in place: a compressed stream cut by a crash ends mid-block, and
        a finished archive ends with end-of-archive blocks (and a gzip trailer) that appended
        members would sit behind. So its members are copied into a new stream, up to the first
        that is not whole (a crash's torn tail), as ``NAME.part.new``, fsynced, then renamed
        over ``NAME.part``: at every moment NAME.part, or NAME, holds every member made durable
        so far, and NAME stays whole until the continued archive replaces it.
        """
        if compression not in ("", "gz"):
            raise UsageError(f"{path}: an archive continued by name must be .tar or .tar.gz "
                             "(bzip2 and xz streams cannot be made readable at each "
                             "checkpoint)")
        if self.names.numbered:
            raise UsageError(f"--name {self.names.template!r}: {{number}} restarts with each "
                             "run, so it cannot tell records already archived; name members by "
                             "a field (the default: candid)")
        self.present = set()
        previous = next((p for p in (self.partial, self.final) if p.exists()), None)
        fresh = self.final.with_name(self.final.name + ".part.new") if previous else self.partial
        try:
            self.file = open(fresh, "wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
        self.stream = _compressor(self.file, compression, self.final)
        self.size = 0
        if previous is None:
            return
        try:
            with open(previous, "rb") as old:
                # A torn tail is what a crash leaves in NAME.part; a finished NAME must read
                # whole (damage there is not ours to cut away).
                for member, data in complete_members(old, str(previous), limit,
                                                     torn_tail=previous == self.partial):
                    self.present.add(member.name)
                    self._add(member, data)
            self.flush()
        except BaseException:
            self.file.close()
            fresh.unlink(missing_ok=True)
            raise
        os.replace(fresh, self.partial)
        _sync_directory(self.partial)

    def write(self, message: Message) -> None:
        self.number += 1
        name = self.names(message, self.number) + self.extension
        if self.present is not None and name in self.present:
            self.duplicates += 1
            return
        value = message.value
        if self.pass_payloads and value is not None and value[:4] == OCF_MAGIC:
            data = value
        else:
            data = self.writer.encode(message)
        member = tarfile.TarInfo(name)
        member.mode = 0o644
        member.mtime = message.timestamp // 1000 if message.timestamp else int(time.time())
        self._add(member, data)
        if self.present is not None:
            self.present.add(name)  # only once written: a record that failed may come again

    def _add(self, member: tarfile.TarInfo, data: bytes) -> None:
        member.size = len(data)
        self._write(member.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        self._write(data)
        self._write(bytes(-len(data) % BLOCK))

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.size += len(data)
        self.dirty = True

    def idle(self) -> None:
        pass  # nobody reads NAME.part while it grows: compress in big runs

    def flush(self) -> None:
        # Nothing new: no fsync, and no empty gzip block each second of a night-long idle.
        if not self.dirty:
            return
        self.stream.flush()  # gzip: a sync flush, so what is on disk decompresses
        self.file.flush()
        os.fsync(self.file.fileno())
        self.dirty = False

    def copies_from(self, source: object) -> None:
        pass

    def close(self, complete: bool = True) -> None:
        finished = False
        try:
            self._write(bytes(2 * BLOCK))  # the end-of-archive blocks
            self._write(bytes(-self.size % RECORD))
            if self.stream is not self.file:
                self.stream.close()  # ends the compressed stream; the file stays open
            self.file.flush()
            os.fsync(self.file.fileno())
            finished = True
        finally:
            self.file.close()
            # A merged archive takes the final name only whole: after a failure its NAME.part
            # stays for the next run to continue, and the NAME it came from stays intact.
            # An interrupted copy keeps its NAME.part too, for a rerun to continue.
            if finished and (complete or self.present is not None):
                os.replace(self.partial, self.final)
        _sync_directory(self.final)


def complete_members(stream: BinaryIO, name: str, limit: int, torn_tail: bool
                     ) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """The regular members of an archive kcp wrote (plain or gzip), each whole, in order.

    ``torn_tail``: the archive may end anyhow (a crashed writer's ``NAME.part``: a member cut
    short, a compressed stream ending mid-block, garbage after it): reading stops quietly at
    the first member that is not whole. Otherwise any damage is a usage error, as is anything
    kcp does not write (a link, a device, a member over ``limit`` bytes): continuing the archive
    would drop it.
    """
    members = _members(_decompressed(stream), limit)
    while True:
        try:
            found = next(members)
        except StopIteration:
            return
        except (_Truncated, EOFError, zlib.error, gzip.BadGzipFile, BadInput) as exc:
            if torn_tail:
                return
            why = getattr(exc, "message", None) or str(exc) or "truncated"
            raise UsageError(f"{name}: cannot be continued, it is damaged ({why}); move it "
                             "away and run again") from None
        member, data, problem = found
        if problem is not None or data is None:
            raise UsageError(f"{name}: cannot be continued: member {member.name}: {problem}")
        yield member, data


def _sync_directory(path: Path) -> None:
    """Make a rename in ``path``'s folder durable (a power cut could otherwise undo it)."""
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass  # some filesystems cannot sync a folder; the rename itself has happened
    finally:
        os.close(folder)


def compression_of(path: str) -> str:
    """"gz", "bz2", "xz" or "" (none), from a tar archive's extension."""
    lowered = path.lower()
    for suffix, compression in COMPRESSIONS.items():
        if lowered.endswith(suffix):
            return compression
    raise UsageError(f"{path}: not a tar archive name ({', '.join(COMPRESSIONS)})")


def member_format(options: Options) -> Format:
    fmt = format_named(options.member_format or options.write_format or "avro")
    if not fmt.extensions:
        choices = ", ".join(name for name, f in FORMATS.items() if f.extensions)
        raise UsageError(f"tar members are files: --member-format must be one of {choices}")
    return fmt


def _compressor(file: BinaryIO, compression: str, final: Path) -> BinaryIO:
    if compression == "gz":
        # Named after the archive without .gz, as gzip would; no timestamp, so runs compare.
        return gzip.GzipFile(str(final), "wb", compresslevel=6, fileobj=file,  # type: ignore
                             mtime=0)
    if compression == "bz2":
        return bz2.BZ2File(file, "wb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(file, "wb")  # type: ignore[return-value]
    return file


def cut_torn_tar_tail(stream: BinaryIO) -> int:
    """Truncate an uncompressed tar after its last complete member (a crashed writer's
    leftovers, and the end-of-archive blocks); return the new size. Reads only headers."""
    size = stream.seek(0, 2)
    good = position = 0
    while position + BLOCK <= size:
        stream.seek(position)
        block = stream.read(BLOCK)
        try:
            member = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:  # the end-of-archive blocks, or a torn header
            break
        position += BLOCK + member.size + (-member.size % BLOCK)
        if position > size:
            break
        if member.type not in _META_TYPES:
            good = position
    stream.truncate(good)
    stream.seek(good)
    return good


def open_source(address: Address, options: Options, config: Config) -> TarSource:
    return TarSource(address, options)


def open_sink(address: Address, options: Options, config: Config) -> TarSink:
    # A copy that resumes (a consumer group) continues its archive rather than replace it.
    return TarSink(address.path or address.text, options, resume=options.group is not None)
