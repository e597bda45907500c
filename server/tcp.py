"""What the Linux kernel knows about a TCP socket's queues (ioctl(2), see
tcp(7)): the one place these probes are written.

- :func:`unread_bytes`: bytes received and not yet read (``SIOCINQ``,
  which is ``FIONREAD``);
- :func:`unsent_bytes`: bytes written and not yet acknowledged by the peer
  (``SIOCOUTQ``, which is ``TIOCOUTQ``).

Each answers -1 when the socket is gone or the probe is not supported.
"""

from __future__ import annotations

import array
import fcntl
import termios
from typing import Protocol

__all__ = ["unread_bytes", "unsent_bytes"]


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def _queue(sock: HasFileno, request: int) -> int:
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), request, buf)
    except (OSError, ValueError):
        return -1
    return buf[0]


def unread_bytes(sock: HasFileno) -> int:
    """Bytes waiting in the kernel's receive queue (SIOCINQ); -1 if unknown."""
    return _queue(sock, termios.FIONREAD)


def unsent_bytes(sock: HasFileno) -> int:
    """Bytes in the kernel's send queue not yet acknowledged (SIOCOUTQ); -1
    if unknown."""
    return _queue(sock, termios.TIOCOUTQ)
