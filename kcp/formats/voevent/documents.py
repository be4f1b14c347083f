"""Streams of VOEvent packets: documents one after the other, each starting with its XML
declaration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

# -- streams of packets -------------------------------------------------------------------------
# Markup that matters for finding where a document ends and the next begins: an XML declaration
# starts a document once the current one has an element; inside comments, CDATA and processing
# instructions "<?xml" means nothing.
_MARKUP = re.compile(rb"<(?:!--|!\[CDATA\[|\?|[^!?/])")
_SKIPPED_MARKUP = re.compile(rb"<(?:!--|!\[CDATA\[|\?)")
_DECLARATION_START = re.compile(rb"<\?xml[\s?]")
_ENDS = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
CHUNK = 1 << 16


def split_documents(stream: BinaryIO, limit: int
                    ) -> Iterator[tuple[bytes | None, int, bool]]:
    """(document, its number, whether it is the last) for each XML document of a stream.

    Documents are cut where a new XML declaration begins after the current document's first
    element (how ``--to voevent`` writes streams).  A document longer than ``limit`` bytes comes
    out as None, and no more than about ``limit`` bytes of it are held in memory.
    """
    buffer = bytearray()
    start = position = 0  # the current document starts at ``start``; scanned up to ``position``
    closer = None  # inside a comment, CDATA section or PI: what ends it
    seen_element = too_big = eof = False
    number = 0
    while True:
        if closer is not None:
            end = buffer.find(closer, position)
            if end >= 0:
                position, closer = end + len(closer), None
                continue
            position = max(position, len(buffer) - len(closer) + 1)  # a closer cut in two
        else:
            found = (_SKIPPED_MARKUP if seen_element else _MARKUP).search(buffer, position)
            if found is None:
                position = max(position, len(buffer) - len(b"<![CDATA["))  # an opener cut in two
            elif found.group()[1:2] not in (b"!", b"?"):
                seen_element = True
                position = found.end()
                continue
            elif found.group() == b"<?" and len(buffer) - found.start() < 6 and not eof:
                position = found.start()  # "<?xml " cut in two: read on before deciding
            elif (found.group() == b"<?" and seen_element
                  and _DECLARATION_START.match(buffer, found.start())):
                number += 1
                yield (None if too_big else bytes(buffer[start:found.start()])), number, False
                start = found.start()
                position = found.end()
                seen_element = too_big = False
                continue
            else:
                closer = _ENDS[found.group()]
                position = found.end()
                continue
        if eof:
            break
        # Need more input.  Everything up to ``position`` belongs to the current document.
        too_big = too_big or position - start > limit
        # Drop what is done with (all of an oversized document), then read.
        del buffer[:position if too_big else start]
        position -= position if too_big else start
        start = 0
        chunk = stream.read(CHUNK)
        if not chunk:
            eof = True
            continue
        buffer += chunk
    if too_big or buffer[start:].strip():
        number += 1
        yield (None if too_big else bytes(buffer[start:])), number, True
