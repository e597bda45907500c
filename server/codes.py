"""The codes an app names: close codes, error kinds and close causes.

Import them from here (``from server.codes import CloseCode, ErrorKind``):
the close codes are the protocol core's (:mod:`server.wire`), the error
kinds and close causes the server's (:mod:`server.kinds`); where each is
defined may change, this module's names do not.
"""

from __future__ import annotations

from .kinds import CloseCause, ErrorKind
from .wire import CloseCode

__all__ = ["CloseCause", "CloseCode", "ErrorKind"]
