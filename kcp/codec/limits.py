"""How far kcp follows what a payload declares about itself.

Files and topics come from other people; a header or a count can claim anything. Every limit
here turns such a claim into a one-line ``BadInput`` before memory or time is spent on it
(docs/reliability.md, "Limits"). The CLI sets them with ``--max-depth``, ``--max-items``,
``--max-block-size`` and ``--max-line-size``.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20


@dataclass
class Limits:
    # Nesting of a schema document, a JSON document or an Avro datum. fastavro's compiled
    # reader and writer recurse in C without Python's recursion check: a datum of a recursive
    # schema a few thousand levels deep overflows the C stack (a segmentation fault), and a few
    # hundred already exhaust Python's recursion limit. 64 is far above any alert schema (ZTF
    # and Rubin nest 4 deep) and far below both.
    max_depth: int = 64
    # The items an array may declare, and the records an OCF block may, when each of them can
    # take no bytes at all (null, an empty record): otherwise what is left of the payload
    # bounds them. A million empty records are about 150 MB of Python dicts.
    max_items: int = 1_000_000
    # The decompressed size of one OCF block (deflate, snappy, zstandard, bzip2, xz), and the
    # size of an OCF header.
    max_block_bytes: int = 256 * MB
    # One JSON line, one whole-file payload (a schemaless .avro, a Confluent frame), one
    # --pipe-through answer line.
    max_line_bytes: int = 256 * MB
