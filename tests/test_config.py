"""Settings from the environment and flags, and what a bad value does."""

from __future__ import annotations

import pytest

from server.app import build_service
from server.config import BACKLOG_HEADROOM, ConfigError, Settings, load_settings, option_table

from .conftest import ROOT, run_python


def test_defaults_without_environment() -> None:
    s = load_settings([], {})
    assert s == Settings()
    assert s.port == 8080
    assert s.host == "0.0.0.0"
    assert s.log_format == "json"
    assert s.max_message_bytes < 10 * 1024 * 1024  # below Tornado's own default
    assert 0 < s.ping_interval < 300  # well below proxies' idle cut
    assert s.ping_timeout <= s.ping_interval


def test_environment_is_read() -> None:
    s = load_settings(
        [],
        {
            "PORT": "9000",
            "WS_LOG_LEVEL": "DEBUG",
            "WS_LOG_FORMAT": "text",
            "WS_LOG_MESSAGES": "off",
            "WS_LOG_CONTENT": "no",
            "WS_LOG_PREVIEW_BYTES": "16",
            "WS_MAX_MESSAGE_BYTES": "2048",
            "WS_PING_INTERVAL": "12.5",
            "WS_PING_TIMEOUT": "5",
            "WS_MAX_CONNECTIONS": "7",
            "WS_ALLOWED_ORIGINS": "https://a.example, http://localhost:3000/",
            "WS_COMPRESSION": "true",
            "WS_DRAIN_TIMEOUT": "9",
            "WS_DRAIN_SPREAD": "2.5",
            "WS_MAX_CONNECTION_AGE": "540",
            "WS_MAX_BACKLOG": "8388608",
        },
    )
    assert s == Settings(
        port=9000,
        log_level="debug",
        log_format="text",
        log_messages=False,
        log_content=False,
        log_preview_bytes=16,
        max_message_bytes=2048,
        ping_interval=12.5,
        ping_timeout=5.0,
        max_connections=7,
        allowed_origins=("https://a.example", "http://localhost:3000"),
        compression=True,
        drain_timeout=9.0,
        drain_spread=2.5,
        max_connection_age=540.0,
        max_backlog=8 * 1024 * 1024,
    )


def test_flag_wins_over_environment() -> None:
    s = load_settings(["--port", "9100", "--log-format", "text"], {"PORT": "9000"})
    assert s.port == 9100
    assert s.log_format == "text"


def test_empty_variable_means_default() -> None:
    assert load_settings([], {"PORT": "", "WS_LOG_LEVEL": ""}) == Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "invalid PORT='http': expected a whole number from 1 to 65535"),
        ({"PORT": "0"}, "invalid PORT='0'"),
        ({"PORT": "9090"}, "reserved by Knative"),
        ({"WS_LOG_LEVEL": "loud"}, "invalid WS_LOG_LEVEL='loud': expected one of debug"),
        ({"WS_LOG_FORMAT": "xml"}, "invalid WS_LOG_FORMAT='xml'"),
        ({"WS_LOG_MESSAGES": "maybe"}, "invalid WS_LOG_MESSAGES='maybe': expected true or false"),
        ({"WS_MAX_MESSAGE_BYTES": "0"}, "invalid WS_MAX_MESSAGE_BYTES='0'"),
        ({"WS_MAX_MESSAGE_BYTES": "1e6"}, "invalid WS_MAX_MESSAGE_BYTES='1e6'"),
        ({"WS_PING_INTERVAL": "-1"}, "invalid WS_PING_INTERVAL='-1'"),
        ({"WS_PING_INTERVAL": "nan"}, "invalid WS_PING_INTERVAL='nan'"),
        ({"WS_PING_INTERVAL": "10", "WS_PING_TIMEOUT": "20"}, "must not exceed WS_PING_INTERVAL"),
        ({"WS_MAX_CONNECTIONS": "-5"}, "invalid WS_MAX_CONNECTIONS='-5'"),
        ({"WS_ALLOWED_ORIGINS": "example.com"}, "is not an origin"),
        ({"WS_DRAIN_TIMEOUT": "soon"}, "invalid WS_DRAIN_TIMEOUT='soon'"),
        ({"WS_DRAIN_SPREAD": "-1"}, "invalid WS_DRAIN_SPREAD='-1'"),
        ({"WS_MAX_CONNECTION_AGE": "0.5"}, "invalid WS_MAX_CONNECTION_AGE='0.5': expected 0 (off)"),
        ({"WS_MAX_CONNECTION_AGE": "10m"}, "invalid WS_MAX_CONNECTION_AGE='10m'"),
        ({"WS_MAX_BACKLOG": "4MiB"}, "invalid WS_MAX_BACKLOG='4MiB': expected a whole number"),
        # The cap must leave an echo of the largest message room above the
        # 1 MiB pause threshold: 4 MiB of message needs 6 MiB of backlog.
        (
            {"WS_MAX_MESSAGE_BYTES": "4194304", "WS_MAX_BACKLOG": "4194304"},
            "invalid WS_MAX_BACKLOG=4194304: must be at least WS_MAX_MESSAGE_BYTES=4194304",
        ),
        ({"WS_MAX_BACKLOG": "3145727"}, "invalid WS_MAX_BACKLOG=3145727: must be at least"),
        ({"WS_MAX_CONNECTION_AGE": "inf"}, "invalid WS_MAX_CONNECTION_AGE='inf'"),
        # One message for every bad age, in plain numbers (it said "from 0
        # to 2.6784e+06" for these, and "from 1 to 2678400" for 0.5).
        (
            {"WS_MAX_CONNECTION_AGE": "10m"},
            "invalid WS_MAX_CONNECTION_AGE='10m': expected 0 (off) or a number of seconds "
            "from 1 to 2678400$",
        ),
        (
            {"WS_MAX_CONNECTION_AGE": "2678401"},
            "invalid WS_MAX_CONNECTION_AGE='2678401': expected 0 (off) or a number of seconds "
            "from 1 to 2678400$",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings([], env)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="invalid --max-connections='many'"):
        load_settings(["--max-connections", "many"], {})


def test_process_exits_2_with_a_message_naming_the_variable() -> None:
    proc = run_python("-m", "server", env={"PATH": "/usr/bin:/bin", "WS_PING_INTERVAL": "often"})
    assert proc.returncode == 2
    assert "invalid WS_PING_INTERVAL='often'" in proc.stderr
    assert proc.stdout == ""


def test_help_lists_every_variable() -> None:
    proc = run_python("-m", "server", "--help")
    assert proc.returncode == 0
    for env, flag, _default, _help in option_table():
        assert flag in proc.stdout
        assert env in proc.stdout


def test_the_docs_document_every_setting_with_its_default() -> None:
    """docs/reference/settings.md (generated by scripts/gen_docs.py, kept
    current by tests/test_docs.py) has a row for each setting."""
    page = (ROOT / "docs" / "reference" / "settings.md").read_text()
    for env, flag, default, _help in option_table():
        assert f"| `{env}` | `{default}` | `{flag}` |" in page, env


def test_the_backlog_cap_reaches_every_connections_limits() -> None:
    """WS_MAX_BACKLOG's one path: the environment, Settings, the Service's
    SendLimits (each connection's transport compares its backlog with it)."""
    settings = load_settings([], {"WS_MAX_BACKLOG": "5242880"})
    assert build_service(settings).limits.max_backlog == 5 * 1024 * 1024
    assert load_settings([], {"WS_MAX_BACKLOG": "3145728"}).max_backlog == 3 * 1024 * 1024


def test_an_unset_backlog_cap_follows_a_raised_message_limit() -> None:
    """Raising WS_MAX_MESSAGE_BYTES alone (as the chart's maxMessageBytes or
    Autobahn's 64 MiB do) starts the server with the cap at its floor;
    only an explicit WS_MAX_BACKLOG below the floor is refused."""
    raised = load_settings([], {"WS_MAX_MESSAGE_BYTES": str(16 << 20)})
    assert raised.max_backlog == (16 << 20) + BACKLOG_HEADROOM
    assert load_settings([], {}).max_backlog == 4 << 20
    with pytest.raises(ConfigError, match="WS_MAX_BACKLOG"):
        load_settings([], {"WS_MAX_MESSAGE_BYTES": str(16 << 20), "WS_MAX_BACKLOG": str(8 << 20)})
