"""server.tcp: the kernel's queue probes, on real loopback sockets."""

from __future__ import annotations

import socket
import time

from server.tcp import unread_bytes, unsent_bytes


def test_queues_of_a_loopback_pair() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        assert unread_bytes(server) == 0
        assert unsent_bytes(client) == 0
        client.sendall(b"x" * 1000)
        deadline = time.monotonic() + 5
        while unread_bytes(server) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unread_bytes(server) == 1000
        server.recv(400)
        assert unread_bytes(server) == 600
        assert unsent_bytes(client) == 0  # loopback acknowledges at once
    finally:
        for s in (client, server, listener):
            s.close()


def test_a_closed_socket_is_unknown() -> None:
    s = socket.socket()
    s.close()
    assert unread_bytes(s) == -1
    assert unsent_bytes(s) == -1
