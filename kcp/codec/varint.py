"""Avro's zig-zag varints (longs), read and written: the framings and the datum guard share them."""

from __future__ import annotations

from ..errors import BadInput


class Truncated(BadInput):
    """Bytes that end too soon: more of the stream may complete them (an OCF header)."""


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the zig-zag varint at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        try:
            byte = buf[pos]
        except IndexError:
            raise Truncated("truncated: a varint runs past the end of the payload") from None
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise BadInput("malformed varint (longer than 10 bytes)")


def write_long(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
