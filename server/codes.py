"""The codes an app names: close codes, error kinds and close causes.

Import them from here (``from server.codes import CloseCode, ErrorKind``),
not from the protocol core :mod:`server.wire`, which defines them today
and may move the server's own kinds out of it.
"""

from __future__ import annotations

from .wire import CloseCause, CloseCode, ErrorKind

__all__ = ["CloseCause", "CloseCode", "ErrorKind"]
