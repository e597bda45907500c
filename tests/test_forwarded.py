"""server/forwarded.py: who the client is, from the socket peer and the
forwarded headers - example cases, and Hypothesis properties over any header."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.forwarded import (
    MAX_HEADER_CHARS,
    client_address,
    parse_forwarded,
    parse_trusted,
    parse_x_forwarded_for,
    resolve_peer,
)

PRIVATE = parse_trusted("private")
QUEUE_PROXY = "127.0.0.1"


def test_knative_chain_gives_the_address_the_gateway_saw() -> None:
    # client spoofed 6.6.6.6; gateway appended 203.0.113.7; activator
    # appended the gateway pod; queue-proxy appended the activator pod.
    xff = "6.6.6.6, 203.0.113.7, 10.244.0.12, 10.244.0.9"
    assert client_address(QUEUE_PROXY, [xff], PRIVATE) == "203.0.113.7"
    # without the activator in the path: one hop fewer, same answer
    assert client_address(QUEUE_PROXY, ["6.6.6.6, 203.0.113.7, 10.244.0.12"], PRIVATE) == (
        "203.0.113.7"
    )


def test_untrusted_socket_peer_headers_are_ignored() -> None:
    assert client_address("198.51.100.1", ["1.2.3.4"], PRIVATE) is None
    assert client_address(QUEUE_PROXY, ["1.2.3.4"], parse_trusted("none")) is None


def test_all_trusted_gives_the_left_most() -> None:
    assert client_address(QUEUE_PROXY, ["10.0.0.5, 10.0.0.6"], PRIVATE) == "10.0.0.5"


def test_malformed_headers_are_ignored() -> None:
    assert client_address(QUEUE_PROXY, ["not-an-ip, 10.0.0.1"], PRIVATE) is None
    assert client_address(QUEUE_PROXY, ["1.2.3.4\x1b[31m"], PRIVATE) is None


def test_padding_an_oversized_header_cannot_hide_the_client() -> None:
    """Only the header's right end is read: a client that pads the left
    (what it controls) past the size limit still gets the address the
    proxies appended, not the queue-proxy's."""
    huge = "1.1.1.1, " * (MAX_HEADER_CHARS // 9 + 1) + "2.2.2.2, 10.0.0.7"
    assert client_address(QUEUE_PROXY, [huge], PRIVATE) == "2.2.2.2"
    junk = "x" * (MAX_HEADER_CHARS * 2) + ", 203.0.113.5"
    assert client_address(QUEUE_PROXY, [junk], PRIVATE) == "203.0.113.5"
    assert client_address(QUEUE_PROXY, ["x" * (MAX_HEADER_CHARS * 2)], PRIVATE) is None


def test_ports_brackets_and_mapped_addresses() -> None:
    assert client_address(QUEUE_PROXY, ["203.0.113.7:4711"], PRIVATE) == "203.0.113.7"
    assert client_address(QUEUE_PROXY, ["[2001:db8::1]:4711"], PRIVATE) == "2001:db8::1"
    assert client_address("::ffff:127.0.0.1", ["203.0.113.7"], PRIVATE) == "203.0.113.7"


def test_forwarded_and_x_real_ip() -> None:
    value = 'for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, for=10.1.2.3'
    assert client_address(QUEUE_PROXY, [value], PRIVATE, "forwarded") == "2001:db8::1"
    assert client_address(QUEUE_PROXY, ["for=_hidden"], PRIVATE, "forwarded") is None
    assert client_address(QUEUE_PROXY, ["203.0.113.9"], PRIVATE, "x-real-ip") == "203.0.113.9"
    assert client_address(QUEUE_PROXY, ["1.1.1.1, 2.2.2.2"], PRIVATE, "x-real-ip") is None
    assert client_address(QUEUE_PROXY, ["203.0.113.9"], PRIVATE, "none") is None


def test_parse_trusted_rejects_what_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="not an address or CIDR range"):
        parse_trusted("10.0.0.0/8,example.com")
    assert parse_trusted("*").any
    assert not parse_trusted("none")


def test_resolve_peer_keeps_the_socket_peer() -> None:
    peer, sock = resolve_peer(
        ("127.0.0.1", 5555), "127.0.0.1", ["9.9.9.9"], ("private",), "x-forwarded-for"
    )
    assert (peer, sock) == ("9.9.9.9", "127.0.0.1:5555")
    peer, sock = resolve_peer(("::1", 80, 0, 0), "::1", [], ("private",), "x-forwarded-for")
    assert (peer, sock) == ("[::1]:80", "[::1]:80")


# -- properties -------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4)
ip_any = st.ip_addresses()
header_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(header_text, max_size=3), socket_host=st.one_of(ip_any.map(str), header_text)
)
def test_never_raises_and_answers_an_address_or_none(values: list[str], socket_host: str) -> None:
    for header in ("x-forwarded-for", "forwarded", "x-real-ip", "none"):
        for trusted in (PRIVATE, parse_trusted("*"), parse_trusted("none")):
            got = client_address(socket_host, values, trusted, header)
            if got is not None:
                ipaddress.ip_address(got)  # always a plain address, never client text
                assert len(got) <= 39


@settings(max_examples=300, deadline=None)
@given(
    spoofed=st.lists(
        st.one_of(ip_any.map(str), header_text.filter(lambda t: "," not in t)), max_size=5
    ),
    client=ipv4.filter(lambda a: a not in PRIVATE),
    proxies=st.lists(st.ip_addresses(v=4, network="10.0.0.0/8"), min_size=1, max_size=4),
)
def test_the_client_cannot_move_itself_off_the_right_most_untrusted_entry(
    spoofed: list[str], client: ipaddress.IPv4Address, proxies: list[ipaddress.IPv4Address]
) -> None:
    """Whatever the client puts in front, the answer is the address the
    first trusted proxy appended - or the socket peer when the header is
    malformed or too long - never something the client chose."""
    value = ", ".join([*spoofed, str(client), *map(str, proxies)])
    got = client_address(QUEUE_PROXY, [value], PRIVATE)
    assert got in (str(client), None)
    if len(value) <= MAX_HEADER_CHARS:
        assert got == str(client)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(ip_any, min_size=1, max_size=40))
def test_x_forwarded_for_round_trip_keeps_the_right_end(
    entries: list[ipaddress._BaseAddress],
) -> None:
    parsed = parse_x_forwarded_for(", ".join(map(str, entries)))
    assert parsed is not None
    assert parsed == entries[-len(parsed) :]
    assert len(parsed) == min(len(entries), 32)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(ip_any, min_size=1, max_size=10))
def test_forwarded_round_trip(entries: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    value = ", ".join(
        f'for="[{a}]:1"' if a.version == 6 else f"for={a};proto=http" for a in entries
    )
    assert parse_forwarded(value) == entries
