"""A Tornado WebSocket echo server built to run as a Knative Service.

The public surface: :func:`server.config.load_settings` and
:class:`server.config.Settings`, :func:`server.lifecycle.make_app` and
:func:`server.lifecycle.serve`, the handler :class:`server.handlers.EchoWebSocket`,
and the probe client :mod:`server.probe`.
"""

__version__ = "0.1.0"
