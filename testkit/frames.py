"""RFC 6455 frames as a client sends them, built byte by byte.

Independent of ``server.wire`` (which parses them) and ``server.mask``: the
masking is a plain XOR here, so a test compares two implementations.
Everything a hostile client might want to get wrong is a parameter: an
unmasked frame, reserved bits, a length that is not the payload's, a longer
length encoding than needed.
"""

from __future__ import annotations

import os
import struct

__all__ = ["close_payload", "frame", "frame_head", "mask_payload"]

#: The length encodings of RFC 6455 5.2: in the 7-bit field, 16-bit, 64-bit.
LENGTH_7, LENGTH_16, LENGTH_64 = 0, 126, 127


def mask_payload(mask: bytes, payload: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` (RFC 6455 5.3)."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frame_head(
    opcode: int,
    size: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes | None = None,
    length_form: int | None = None,
) -> bytes:
    """The header of a frame with a ``size``-byte payload, its masking key
    included when ``masked`` (``mask``, or 4 random bytes). ``length_form``
    forces the 7-bit (0), 16-bit (126) or 64-bit (127) length encoding."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    form = length_form
    if form is None:
        form = LENGTH_7 if size < 126 else LENGTH_16 if size < 1 << 16 else LENGTH_64
    if form == LENGTH_7:
        head = bytes((first, mask_bit | size))
    elif form == LENGTH_16:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    elif form == LENGTH_64:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    else:
        raise ValueError(f"length_form must be 0, 126 or 127, not {form}")
    if not masked:
        return head
    if mask is None:
        mask = os.urandom(4)
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    return head + mask


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes | None = None,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """One whole frame: masked with ``mask`` (4 random bytes if None) unless
    ``masked`` is False; ``length`` lets a test lie about the payload's size."""
    if masked and mask is None:
        mask = os.urandom(4)
    size = len(payload) if length is None else length
    head = frame_head(
        opcode, size, fin=fin, rsv=rsv, masked=masked, mask=mask, length_form=length_form
    )
    if not masked:
        return head + payload
    assert mask is not None
    return head + mask_payload(mask, payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's body: the 2-byte code, then the reason."""
    return struct.pack("!H", code) + reason
