"""Masking and unmasking of frame payloads (RFC 6455 section 5.3).

The one place the core gets its speed-up from: Tornado's C extension,
``tornado.speedups.websocket_mask`` (a public module: Tornado builds it on
every platform with a compiler, and ships the pure-Python code below as its
own fallback). Only this module imports it, so :mod:`server.wire` stays free
of Tornado (``pyproject.toml``'s import contracts allow this one edge).
"""

from __future__ import annotations

__all__ = ["SPEEDUPS", "apply_mask"]


def _apply_mask_py(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated, in pure Python."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(size, "little")


try:
    from tornado.speedups import websocket_mask as _apply_mask_c
except ImportError:  # pragma: no cover - a Tornado built without its C extension
    apply_mask = _apply_mask_py
    SPEEDUPS = False
else:
    apply_mask = _apply_mask_c
    SPEEDUPS = True
