"""Example services on :class:`server.base.KnativeWebSocketHandler` (run from
the checkout; not part of the installed package)."""
