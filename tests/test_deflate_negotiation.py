"""permessage-deflate negotiation (RFC 7692 section 7), offer by offer.

1. Every parameter of section 7, valid and invalid, alone and combined,
   duplicated, unknown, quoted, and several offers with the first invalid:
   ``negotiate_deflate`` accepts with the right response or declines
   (returns None), never raises. A declined offer costs the client only the
   compression (7.1: "the server declines"), never the connection.
2. websockets' client as a real peer: for every configuration its
   ``ClientPerMessageDeflateFactory`` can offer, websockets' own client-side
   processing accepts our response, and messages compressed by each side
   inflate on the other, with context takeover on and off.
"""

from __future__ import annotations

import itertools

import pytest
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Opcode

from server.wire import Connection, Deflate, Message, negotiate_deflate, parse_extensions
from tests.test_wire import websockets_handshake

D = Deflate


def param(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


# -- 1. the offers, one parameter at a time ------------------------------------------

NO_VALUE_PARAMS = ["server_no_context_takeover", "client_no_context_takeover"]


@pytest.mark.parametrize("name", NO_VALUE_PARAMS)
def test_context_takeover_params_without_a_value_are_accepted_and_echoed(name: str) -> None:
    agreed = negotiate_deflate([f"permessage-deflate; {name}"])
    assert agreed is not None
    assert getattr(agreed, name) is True
    assert agreed.response() == f"permessage-deflate; {name}"


@pytest.mark.parametrize("name", NO_VALUE_PARAMS)
@pytest.mark.parametrize("value", ["1", "true", '""', '"x"'])
def test_context_takeover_params_with_a_value_are_declined(name: str, value: str) -> None:
    """RFC 7692 7.1.1.1 and 7.1.1.2: these parameters have no value."""
    assert negotiate_deflate([f"permessage-deflate; {name}={value}"]) is None


SERVER_BITS: list[tuple[str | None, int | None]] = [
    ("7", None),
    # zlib has no 8-bit raw deflate window (it silently uses 9), so an offer
    # capping our window at 8 cannot be honoured: declined, as 7.1 allows.
    ("8", None),
    *[(str(n), n) for n in range(9, 16)],
    ("16", None),
    ("0", None),
    ("010", None),  # 7.1.2.1: no leading zeros
    ("-9", None),
    (None, None),  # 7.1.2.1: server_max_window_bits has a value
    ("abc", None),
    ('"10"', 10),  # the quoted-string form, after unescaping (7.1)
    ('"1\\0"', 10),
    ('"abc"', None),
    ('"16"', None),
    ("9.5", None),
]


@pytest.mark.parametrize(("value", "bits"), SERVER_BITS)
def test_server_max_window_bits(value: str | None, bits: int | None) -> None:
    agreed = negotiate_deflate([f"permessage-deflate; {param('server_max_window_bits', value)}"])
    if bits is None:
        assert agreed is None
        return
    assert agreed == D(server_max_window_bits=bits, server_max_window_bits_offered=True)
    # 7.1.2.1: "A server accepts an extension negotiation offer with this
    # parameter by including the server_max_window_bits extension parameter
    # in the extension negotiation response ... with the same or smaller value".
    params = dict(parse_extensions([agreed.response()])[0][1])
    assert "server_max_window_bits" in params, agreed.response()
    assert 8 <= int(params["server_max_window_bits"]) <= bits


CLIENT_BITS: list[tuple[str | None, bool]] = [
    (None, True),  # 7.1.2.2: without a value, the client takes what we answer
    ("7", False),
    *[(str(n), True) for n in range(8, 16)],
    ("16", False),
    ("abc", False),
    ('"12"', True),
    ('"abc"', False),
    ("010", False),
]


@pytest.mark.parametrize(("value", "accepted"), CLIENT_BITS)
def test_client_max_window_bits(value: str | None, accepted: bool) -> None:
    agreed = negotiate_deflate([f"permessage-deflate; {param('client_max_window_bits', value)}"])
    if not accepted:
        assert agreed is None
        return
    assert agreed == D()
    # We read any window up to 15 bits; a client_max_window_bits in our
    # response is optional (7.1.2.2) and, if present, must not exceed the offer.
    params = dict(parse_extensions([agreed.response()])[0][1])
    if "client_max_window_bits" in params and value is not None:
        assert int(params["client_max_window_bits"]) <= int(value.strip('"'))


@pytest.mark.parametrize(
    "name",
    [*NO_VALUE_PARAMS, "server_max_window_bits", "client_max_window_bits"],
)
def test_duplicate_parameters_are_declined(name: str) -> None:
    """RFC 7692 7.1: an offer with a parameter twice is declined."""
    value = None if name in NO_VALUE_PARAMS else "10"
    offer = f"permessage-deflate; {param(name, value)}; {param(name, value)}"
    assert negotiate_deflate([offer]) is None


@pytest.mark.parametrize("unknown", ["x", "x=1", "mux", "server_max_window", "CLIENT-X=y"])
def test_unknown_parameters_are_declined(unknown: str) -> None:
    assert negotiate_deflate([f"permessage-deflate; {unknown}"]) is None


def test_every_combination_of_valid_parameters() -> None:
    """All 2 x 2 x 9 x 10 combinations of the four parameters, in two
    orders: each is accepted with exactly what was asked, or (a server
    window of 8) declined."""
    server_bits = [None, *map(str, range(9, 16)), "8"]
    client_bits = [None, "", *map(str, range(8, 16))]
    for snct, cnct, sbits, cbits in itertools.product(
        [False, True], [False, True], server_bits, client_bits
    ):
        parts = []
        if snct:
            parts.append("server_no_context_takeover")
        if cnct:
            parts.append("client_no_context_takeover")
        if sbits is not None:
            parts.append(f"server_max_window_bits={sbits}")
        if cbits is not None:
            parts.append(param("client_max_window_bits", cbits or None))
        for order in (parts, parts[::-1]):
            offer = "; ".join(["permessage-deflate", *order])
            agreed = negotiate_deflate([offer])
            if sbits == "8":
                assert agreed is None, offer
                continue
            assert agreed == D(snct, cnct, int(sbits) if sbits else 15, bool(sbits)), offer
            response = dict(parse_extensions([agreed.response()])[0][1])
            assert ("server_no_context_takeover" in response) == snct
            assert ("client_no_context_takeover" in response) == cnct
            if sbits:
                assert response.get("server_max_window_bits") == sbits, (offer, response)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Several offers, the first invalid: the next one is taken.
        (["permessage-deflate; server_max_window_bits=7, permessage-deflate"], D()),
        (
            [
                "permessage-deflate; x=1, permessage-deflate; client_no_context_takeover",
                "permessage-deflate",
            ],
            D(client_no_context_takeover=True),
        ),
        (["permessage-deflate; bogus", "permessage-deflate; server_no_context_takeover"], D(True)),
        # Other extensions are passed over.
        (["x-webkit-deflate-frame, permessage-deflate"], D()),
        (['foo; bar="a,b;c", permessage-deflate'], D()),
        # Names and parameter names are case-insensitive tokens.
        (["Permessage-Deflate; Server_No_Context_Takeover"], D(True)),
        # Empty list elements are allowed (RFC 7230 7).
        ([", permessage-deflate ,"], D()),
        # Every offer invalid: declined.
        (["permessage-deflate; a, permessage-deflate; b"], None),
        (["x-webkit-deflate-frame"], None),
        ([], None),
        ([""], None),
    ],
)
def test_several_offers(header: list[str], expected: Deflate | None) -> None:
    assert negotiate_deflate(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; =10",
        "permessage-deflate;; ",
        'permessage-deflate; server_max_window_bits="10',
        "permessage-deflate; server_max_window_bits=1 0",
        "permessage deflate",
        ";permessage-deflate",
        "permessage-deflate; a b",
        "\x00permessage-deflate",
        "permessage-deflate; client_max_window_bits=\u00e9",
        'permessage-deflate; x="\\',
    ],
)
def test_malformed_headers_are_declined_never_raised(header: str) -> None:
    assert negotiate_deflate([header]) is None
    assert negotiate_deflate([header, "permessage-deflate"]) in (None, D())


# -- 2. websockets' client as the peer -------------------------------------------------

CLIENT_CONFIGS = list(
    itertools.product(
        [False, True],  # server_no_context_takeover
        [False, True],  # client_no_context_takeover
        [None, *range(8, 16)],  # server_max_window_bits
        # client_max_window_bits (websockets offers 9 to 15: zlib has no 8-bit window)
        [None, True, *range(9, 16)],
    )
)

MESSAGES = [
    b"",
    b"hello " * 200,
    bytes(range(256)) * 30,
    b"hello " * 200,  # the same again: context takeover makes it tiny
    "κόσμε ".encode() * 1000,
]


def config_id(config: tuple) -> str:
    snct, cnct, sbits, cbits = config
    return f"snct={int(snct)}-cnct={int(cnct)}-sbits={sbits}-cbits={cbits}"


@pytest.mark.parametrize("config", CLIENT_CONFIGS, ids=config_id)
def test_websockets_client_accepts_our_response_and_both_sides_inflate(config: tuple) -> None:
    snct, cnct, sbits, cbits = config
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=snct,
        client_no_context_takeover=cnct,
        server_max_window_bits=sbits,
        client_max_window_bits=cbits,
    )
    # websockets' client checks our 101 response (a rejection fails here).
    client, deflate = websockets_handshake([factory])
    if sbits == 8:
        # Declined (see test_server_max_window_bits): the client goes on without it.
        assert deflate is None
        assert client.extensions == []
        return
    assert deflate is not None
    [extension] = client.extensions
    assert isinstance(extension, PerMessageDeflate)
    assert extension.remote_no_context_takeover == snct
    assert extension.local_no_context_takeover == cnct
    ours = Connection(1 << 20, deflate)

    # Server to client: every message inflates in websockets' client.
    sent = b"".join(b"".join(ours.send_binary(m)) for m in MESSAGES)
    client.receive_data(sent)
    frames = client.events_received()
    assert client.parser_exc is None
    assert [f.opcode for f in frames] == [Opcode.BINARY] * len(MESSAGES)
    assert [bytes(f.data) for f in frames] == MESSAGES

    # Client to server: websockets compresses, we inflate.
    for message in MESSAGES:
        client.send_binary(message)
    client.send_text("fin ✓".encode())
    data = b"".join(client.data_to_send())
    assert data[0] & 0x40  # compressed, so the test tests inflation
    ours.receive_data(data)
    assert ours.events_received() == [Message(m) for m in MESSAGES] + [Message("fin ✓")]


def test_client_context_takeover_makes_repeats_small() -> None:
    """A check that the peer test can tell takeover apart: with it, the
    repeated message is compressed against the first; without, it is not."""
    sizes = {}
    for cnct in (False, True):
        factory = ClientPerMessageDeflateFactory(client_no_context_takeover=cnct)
        client, _ = websockets_handshake([factory])
        client.send_binary(b"hello " * 200)
        client.data_to_send()
        client.send_binary(b"hello " * 200)
        sizes[cnct] = len(b"".join(client.data_to_send()))
    assert sizes[False] < sizes[True]
