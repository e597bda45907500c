"""Settings from environment variables and command-line flags.

Every setting has an environment variable (what Knative and Kubernetes set)
and a flag (what a person types); a flag wins over the variable. Values are
validated once at start: a bad one ends the process with status 2 and a
message that names the variable or flag it came from, so a typo in a
manifest shows up in the first log line of a crash-looping pod instead of as
odd behaviour later.

This is hand-written on top of :mod:`argparse` on purpose: the server must
be listening within a few hundred milliseconds of a scale-from-zero, and a
settings library (pydantic-settings and friends) costs more import time than
the whole server.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = ["ConfigError", "Settings", "load_settings", "option_table"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("json", "text")

#: What WS_MAX_BACKLOG must leave above WS_MAX_MESSAGE_BYTES: the 1 MiB past
#: which a connection's reading pauses (its echoes stop), plus one turn's
#: parsing (256 KiB) and headers, with room to spare. A client that reads
#: at all never meets the cap through its own echoes.
BACKLOG_HEADROOM = 2 * 1024 * 1024

#: Ports Knative's queue-proxy and its sidecars take; a user container must not.
KNATIVE_RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})


class ConfigError(ValueError):
    """A setting's value is not acceptable; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated configuration of one server process."""

    port: int = 8080
    host: str = "0.0.0.0"
    log_level: str = "info"
    log_format: str = "json"
    log_messages: bool = True
    log_content: bool = True
    log_preview_bytes: int = 64
    max_message_bytes: int = 1024 * 1024
    ping_interval: float = 30.0
    ping_timeout: float = 20.0
    max_connections: int = 10_000
    allowed_origins: tuple[str, ...] = ()
    compression: bool = False
    drain_timeout: float = 20.0
    drain_spread: float = 5.0
    send_timeout: float = 30.0
    max_backlog: int = 4 * 1024 * 1024
    event_loop: str = "uvloop"
    workers: int = 1
    trusted_proxies: tuple[str, ...] = ("private",)
    forwarded_header: str = "x-forwarded-for"
    log_message_rate: float = 10.0
    log_message_burst: int = 100
    request_head_timeout: float = 5.0
    idle_timeout: float = 75.0
    max_connection_age: float = 0.0
    #: Never in a repr: it may carry a password.
    backplane_url: str = dataclasses.field(default="", repr=False)
    backplane_retention: int = 1000


# -- value parsers: each takes the raw string and returns the value or raises
#    ValueError with what was expected.


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return value

    return parse


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds from {lo:g} to {hi:g}") from None
        if not lo <= value <= hi:  # also rejects nan
            raise ValueError(f"expected a number of seconds from {lo:g} to {hi:g}")
        return value

    return parse


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def _port(raw: str) -> int:
    value = _int_range(1, 65535)(raw)
    if value in KNATIVE_RESERVED_PORTS:
        raise ValueError(
            "port is reserved by Knative's queue-proxy (8012, 8013, 8022, 9090, 9091, 8008)"
        )
    return value


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip().lower().rstrip("/") for item in raw.split(",") if item.strip())
    for item in items:
        if item == "*":
            continue
        scheme, sep, rest = item.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(
                f"{item!r} is not an origin: expected '*' or a comma-separated list "
                "like https://example.com,http://localhost:3000"
            )
    return items


def _trusted(raw: str) -> tuple[str, ...]:
    from .forwarded import parse_trusted

    parse_trusted(raw)  # raises ValueError naming the bad item
    return tuple(item.strip().lower() for item in raw.split(",") if item.strip()) or ("none",)


_MAX_AGE = 31 * 86400


def _age(raw: str) -> float:
    message = f"expected 0 (off) or a number of seconds from 1 to {_MAX_AGE}"
    try:
        value = _seconds(0, _MAX_AGE)(raw)
    except ValueError:
        raise ValueError(message) from None
    if 0 < value < 1:
        raise ValueError(message)
    return value


def _backplane_url(raw: str) -> str:
    from urllib.parse import urlsplit

    value = raw.strip()
    expected = (
        "expected a Redis URL: redis://[user:password@]host[:port][/db], "
        "rediss://... (TLS) or unix:///path/to/socket (percent-encode / # ? @ "
        "in the user or password: %2F %23 %3F %40)"
    )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return value
    if parts.scheme == "unix" and parts.path:
        return value
    raise ValueError(expected)


def _redacted(raw: str) -> str:
    """A secret setting's value as an error message may show it."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(raw.strip())
        # An "@" anywhere: a password whose "/", "#" or "?" ended the
        # userinfo early is not where urlsplit looks for one.
        if (
            parts.password is None
            and "@" not in raw
            and "password" not in unquote(parts.query).lower()
        ):
            return raw
    except ValueError:
        pass
    return "<redacted>"


def _rate(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number of events per second from 0 to 100000") from None
    if not 0 <= value <= 100_000:
        raise ValueError("expected a number of events per second from 0 to 100000")
    return value


@dataclasses.dataclass(frozen=True)
class _Option:
    field: str
    env: str
    flag: str
    parse: Callable[[str], Any]
    help: str
    #: Its value may hold a password: an error message does not show it.
    secret: bool = False

    @property
    def default(self) -> Any:
        return next(f.default for f in dataclasses.fields(Settings) if f.name == self.field)


OPTIONS: tuple[_Option, ...] = (
    _Option("port", "PORT", "--port", _port, "TCP port to listen on; Knative sets it"),
    _Option("host", "WS_HOST", "--host", str.strip, "address to bind"),
    _Option(
        "log_level",
        "WS_LOG_LEVEL",
        "--log-level",
        _choice(_LOG_LEVELS),
        "log level: debug, info, warning, error",
    ),
    _Option(
        "log_format",
        "WS_LOG_FORMAT",
        "--log-format",
        _choice(_LOG_FORMATS),
        "json (one object a line, for log collectors) or text (for people)",
    ),
    _Option(
        "log_messages",
        "WS_LOG_MESSAGES",
        "--log-messages",
        _bool,
        "log a 'message' event for every message, as the Knative sample does",
    ),
    _Option(
        "log_content",
        "WS_LOG_CONTENT",
        "--log-content",
        _bool,
        "include a preview of each message's content in its event (false for privacy)",
    ),
    _Option(
        "log_preview_bytes",
        "WS_LOG_PREVIEW_BYTES",
        "--log-preview-bytes",
        _int_range(0, 65536),
        "how much of a message the preview shows (text: characters, binary: bytes as hex)",
    ),
    _Option(
        "max_message_bytes",
        "WS_MAX_MESSAGE_BYTES",
        "--max-message-bytes",
        _int_range(1, 256 * 1024 * 1024),
        "largest message accepted; a larger one closes the connection with 1009",
    ),
    _Option(
        "ping_interval",
        "WS_PING_INTERVAL",
        "--ping-interval",
        _seconds(0, 3600),
        "seconds between keepalive pings (0: off); keep below the idle timeouts of "
        "load balancers, NAT and proxies on the path",
    ),
    _Option(
        "ping_timeout",
        "WS_PING_TIMEOUT",
        "--ping-timeout",
        _seconds(0, 3600),
        "seconds to wait for a pong before closing a dead connection with 1011 (0: never)",
    ),
    _Option(
        "max_connections",
        "WS_MAX_CONNECTIONS",
        "--max-connections",
        _int_range(0, 1_000_000),
        "open WebSockets allowed at once (0: no cap); over it an upgrade gets 503",
    ),
    _Option(
        "allowed_origins",
        "WS_ALLOWED_ORIGINS",
        "--allowed-origins",
        _origins,
        "extra browser origins allowed, comma-separated, or '*' for any; same-origin "
        "pages and non-browser clients are always allowed",
    ),
    _Option(
        "compression",
        "WS_COMPRESSION",
        "--compression",
        _bool,
        "offer permessage-deflate (RFC 7692) to clients that ask for it",
    ),
    _Option(
        "drain_timeout",
        "WS_DRAIN_TIMEOUT",
        "--drain-timeout",
        _seconds(0, 3600),
        "seconds a SIGTERM drain may take before the process exits anyway",
    ),
    _Option(
        "drain_spread",
        "WS_DRAIN_SPREAD",
        "--drain-spread",
        _seconds(0, 3600),
        "seconds over which a SIGTERM drain spreads its 1001 closes, so clients do not "
        "all reconnect at once (0: all at once); at most half of WS_DRAIN_TIMEOUT is used",
    ),
    _Option(
        "send_timeout",
        "WS_SEND_TIMEOUT",
        "--send-timeout",
        _seconds(0, 3600),
        "seconds a client may leave over 1 MiB of echoes unread before it is closed "
        "with 1008 (0: never); meanwhile its messages are not read. A plain HTTP "
        "connection whose responses fill the kernel's buffers and wait that long "
        "is dropped",
    ),
    _Option(
        "max_backlog",
        "WS_MAX_BACKLOG",
        "--max-backlog",
        _int_range(64 * 1024, 1 << 32),
        "bytes queued to one WebSocket that it has not read (echoes, write_message, "
        "broadcast) past which it is closed at once with 1008 'slow_consumer' and its "
        "queue dropped; at least WS_MAX_MESSAGE_BYTES + 2 MiB (unset: 4 MiB, or that "
        "floor when WS_MAX_MESSAGE_BYTES is raised)",
    ),
    _Option(
        "event_loop",
        "WS_EVENT_LOOP",
        "--event-loop",
        _choice(("uvloop", "asyncio")),
        "event loop: uvloop (libuv, faster) or asyncio (the standard library's)",
    ),
    _Option(
        "workers",
        "WS_WORKERS",
        "--workers",
        _int_range(1, 64),
        "server processes sharing the port with SO_REUSEPORT; match the pod's CPUs",
    ),
    _Option(
        "trusted_proxies",
        "WS_TRUSTED_PROXIES",
        "--trusted-proxies",
        _trusted,
        "proxies whose forwarded headers are believed: 'private' (loopback, 10/8, "
        "172.16/12, 192.168/16, 100.64/10, link-local, fc00::/7: Knative's queue-proxy, "
        "activator and gateway), 'none', '*', or addresses and CIDR ranges, comma-separated",
    ),
    _Option(
        "forwarded_header",
        "WS_FORWARDED_HEADER",
        "--forwarded-header",
        _choice(("x-forwarded-for", "forwarded", "x-real-ip", "none")),
        "the header trusted proxies name the client in: x-forwarded-for (what Knative's "
        "proxies append to), forwarded (RFC 7239), x-real-ip, or none",
    ),
    _Option(
        "log_message_rate",
        "WS_LOG_MESSAGE_RATE",
        "--log-message-rate",
        _rate,
        "message events a connection may log per second after its first "
        "WS_LOG_MESSAGE_BURST (0: every message); the rest are counted on close",
    ),
    _Option(
        "log_message_burst",
        "WS_LOG_MESSAGE_BURST",
        "--log-message-burst",
        _int_range(1, 1_000_000),
        "message events a connection may log at once before WS_LOG_MESSAGE_RATE applies",
    ),
    _Option(
        "request_head_timeout",
        "WS_REQUEST_HEAD_TIMEOUT",
        "--request-head-timeout",
        _seconds(0, 3600),
        "seconds a new connection has to send a complete request head before it gets "
        "408 and is closed (0: only WS_IDLE_TIMEOUT)",
    ),
    _Option(
        "idle_timeout",
        "WS_IDLE_TIMEOUT",
        "--idle-timeout",
        _seconds(0, 86400),
        "seconds a kept-alive plain HTTP connection may wait for its next request "
        "(0: Tornado's default, 3600); longer than the usual load balancer's 60 s, so "
        "the balancer closes first",
    ),
    _Option(
        "max_connection_age",
        "WS_MAX_CONNECTION_AGE",
        "--max-connection-age",
        _age,
        "seconds after which a WebSocket is closed with 1001 'max connection age', at a "
        "moment drawn from its last tenth so connections opened together do not "
        "close together (0: never; else at least 1); set it below the platform's "
        "timeout (Knative's timeoutSeconds) so the client gets a close frame, not a cut",
    ),
    _Option(
        "backplane_url",
        "WS_BACKPLANE_URL",
        "--backplane-url",
        _backplane_url,
        "Redis that carries broadcasts between processes and pods "
        "(redis://user:password@host:6379/0; rediss:// for TLS); unset: each process "
        "is on its own. Logs show it with the password redacted",
        secret=True,
    ),
    _Option(
        "backplane_retention",
        "WS_BACKPLANE_RETENTION",
        "--backplane-retention",
        _int_range(1, 1_000_000),
        "messages each channel keeps for clients that reconnect with ?last_id= "
        "(approximately, in Redis); an older last_id gets a gap notice",
    ),
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="WebSocket echo server for Knative. Every flag also reads "
        "from the environment variable shown; a flag wins.",
    )
    for opt in OPTIONS:
        parser.add_argument(
            opt.flag,
            dest=opt.field,
            default=None,
            metavar=opt.env,
            help=f"{opt.help} (env {opt.env}, default {_show(opt.default)})",
        )
    return parser


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value) or "''"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read flags and environment into :class:`Settings`.

    Raises :class:`ConfigError` naming the first bad setting.
    """
    env = os.environ if environ is None else environ
    args = _build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        flag_value = getattr(args, opt.field)
        if flag_value is not None:
            source, raw = opt.flag, flag_value
        elif env.get(opt.env, "") != "":
            source, raw = opt.env, env[opt.env]
        else:
            continue
        try:
            values[opt.field] = opt.parse(raw)
        except ValueError as exc:
            shown = _redacted(raw) if opt.secret else raw
            raise ConfigError(f"invalid {source}={shown!r}: {exc}") from None
    if "max_backlog" not in values:
        # Unset, the cap follows a raised WS_MAX_MESSAGE_BYTES (4 MiB at least):
        # only an explicit WS_MAX_BACKLOG below the floor is refused.
        message_bytes = values.get("max_message_bytes", Settings.max_message_bytes)
        values["max_backlog"] = max(Settings.max_backlog, message_bytes + BACKLOG_HEADROOM)
    settings = Settings(**values)
    if settings.ping_interval and settings.ping_timeout > settings.ping_interval:
        raise ConfigError(
            f"invalid WS_PING_TIMEOUT={_show(settings.ping_timeout)}: must not exceed "
            f"WS_PING_INTERVAL={_show(settings.ping_interval)}"
        )
    floor = settings.max_message_bytes + BACKLOG_HEADROOM
    if settings.max_backlog < floor:
        raise ConfigError(
            f"invalid WS_MAX_BACKLOG={settings.max_backlog}: must be at least "
            f"WS_MAX_MESSAGE_BYTES={settings.max_message_bytes} + {BACKLOG_HEADROOM} "
            f"({floor}), or echoing one largest message could close a client that reads"
        )
    return settings


def load_settings_or_exit(argv: Sequence[str] | None = None) -> Settings:
    """:func:`load_settings`, ending the process with status 2 on a bad value."""
    try:
        return load_settings(argv)
    except ConfigError as exc:
        _exit_usage(str(exc))


def _exit_usage(message: str) -> NoReturn:
    _build_parser().exit(2, f"python -m server: error: {message}\n")


def option_table() -> list[tuple[str, str, str, str]]:
    """(env, flag, default, help) rows, for ``--help`` and
    docs/reference/settings.md (scripts/gen_docs.py)."""
    return [(o.env, o.flag, _show(o.default), o.help) for o in OPTIONS]
