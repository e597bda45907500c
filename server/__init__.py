"""A Tornado WebSocket echo server built to run as a Knative Service.

The public surface: :func:`server.config.load_settings` and
:class:`server.config.Settings`; :func:`server.app.build_service`,
:func:`server.app.make_app` and :func:`server.app.serve`; the base handler
:class:`server.base.KnativeWebSocketHandler` and :func:`server.base.broadcast`;
the echo :class:`server.echo.EchoWebSocket`; :func:`server.__main__.main` (with
``routes``, or one ``handler``, for a service of your own); the sans-I/O protocol
:mod:`server.wire`; and the probe client :mod:`server.probe`.
"""

__version__ = "0.1.0"
