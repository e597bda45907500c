"""``redis-server`` (the Debian package, scripts/setup.sh) on a free loopback
port in a temporary directory, without persistence: for tests/ and bench/."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .process import free_port

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server_version"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_server_version() -> str:
    """``7.0.15`` (``redis-server --version``'s ``v=``); a missing
    redis-server raises FileNotFoundError."""
    out = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip()


class RedisServer:
    """``redis-server`` on a free loopback port in ``directory``, without
    persistence; :meth:`kill` and :meth:`start` for outages. ``prefix`` goes
    before the command (``taskset -c 0``, say)."""

    def __init__(self, directory: Path, password: str = "", prefix: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.directory = directory
        self.password = password
        self.prefix = tuple(prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"default:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [*self.prefix, REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
