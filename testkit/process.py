"""A server in a subprocess, for tests/ and bench/: ``python -m server`` (or
another module, or any command) on a free loopback port, its output read
line by line by a thread, written to a file, or thrown away.

The environment is the caller's minus every ``WS_*`` variable (a developer's
shell must not change a test), plus ``PORT`` and ``WS_HOST=127.0.0.1``, plus
``env``; ``base_env`` replaces the first part when a caller (bench) builds
the whole environment itself.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ROOT",
    "ServerProcess",
    "free_port",
    "http_status",
    "is_ready",
    "package_versions",
]

#: The checkout: the server runs from here.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on loopback just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 0.5) -> bytes:
    """The status line's start of ``GET path`` on a raw socket (b"" if
    nothing answers): cheap enough to poll every few milliseconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            s.sendall(head.encode())
            return s.recv(16)
    except OSError:
        return b""


def is_ready(port: int) -> bool:
    return http_status(port, "/readyz").startswith(b"HTTP/1.1 200")


class ServerProcess:
    """One server process.

    ``log`` says where its stdout and stderr go: ``"pipe"`` (the default) is
    read by a thread into :attr:`lines` (text), :attr:`log` (each line's
    JSON, or ``{"event": "raw", "line": ...}``) and :attr:`bytes`; clearing
    :attr:`reading` stops the reads (a client that does not read its pipe).
    A :class:`~pathlib.Path` is a file (for a line per message, which a pipe
    read by a thread cannot keep up with); ``None`` is /dev/null.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        module: str = "server",
        *,
        command: Sequence[str] | None = None,
        port: int | None = None,
        base_env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        log: str | Path | None = "pipe",
        nofile: int | None = None,
    ) -> None:
        self.port = free_port() if port is None else port
        if base_env is None:
            full_env = {k: v for k, v in os.environ.items() if not k.startswith("WS_")}
            full_env.update({"PORT": str(self.port), "WS_HOST": "127.0.0.1"})
        else:
            full_env = dict(base_env)
        full_env.update(env or {})
        argv = list(command) if command is not None else [sys.executable, "-m", module, *args]

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.log_path = log if isinstance(log, Path) else None
        self._log_file: IO[bytes] | None = None
        stdout: int | IO[bytes] = subprocess.DEVNULL
        if log == "pipe":
            stdout = subprocess.PIPE
        elif self.log_path is not None:
            self._log_file = stdout = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            preexec_fn=limit if nofile is not None else None,
        )
        self.lines: list[str] = []
        self.log: list[dict[str, Any]] = []
        self.bytes = 0
        self.reading = threading.Event()
        self.reading.set()
        self._docs: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader: threading.Thread | None = None
        if self.proc.stdout is not None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed at teardown
            while True:
                self.reading.wait()
                raw = self.proc.stdout.readline()
                if not raw:
                    return
                self.bytes += len(raw)
                line = raw.decode("utf-8")
                self.lines.append(line)
                doc = _json_object(line)
                if doc is None:
                    doc = {"event": "raw", "line": line.rstrip("\n")}
                self.log.append(doc)
                self._docs.put(doc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        """What the server wrote so far (for an assertion's message)."""
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace")
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 10.0, poll: float = 0.02) -> float:
        """Block until ``/readyz`` answers 200; the seconds since the start."""
        deadline = time.monotonic() + timeout
        while not is_ready(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}: {self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"server never became ready in {timeout} s")
            time.sleep(poll)
        return time.perf_counter() - self.started

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every logged event called ``name`` so far."""
        if self.log_path is not None:
            with self.log_path.open() as f:  # a line per message: parse only the likely ones
                docs = [d for d in map(_json_object, (x for x in f if name in x)) if d]
        else:
            docs = list(self.log)
        return [d for d in docs if d.get("event") == name]

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until the process logs event ``name`` (earlier lines included)."""
        for doc in list(self.log):
            if doc.get("event") == name:
                return doc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                doc = self._docs.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and self._docs.empty():
                    break
                continue
            if doc.get("event") == name:
                return doc
        raise AssertionError(f"no {name!r} event; log so far: {self.log}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes, Any]:
        """``GET path``: status, body and headers (an HTTP error raises)."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, r.read(), r.headers

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far, from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self, field: str = "VmHWM") -> int:
        """A memory figure of /proc/PID/status: ``VmHWM`` (peak RSS), ``VmRSS``."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def rss_kib(self) -> int:
        return self.memory_kib("VmRSS")

    def settle(self, seconds: float = 0.3) -> None:
        """Give the server's log writer time to reach us."""
        time.sleep(seconds)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self) -> None:
        """Kill it if it still runs; release its pipe and file."""
        self.reading.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def package_versions(*packages: str) -> dict[str, str]:
    """Python's version and each installed distribution's ("not installed"
    when it is not), for a benchmark's report."""
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
