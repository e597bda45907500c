"""Who the client is, from the TCP peer and the forwarded headers proxies add.

Pure functions, no Tornado: the handler passes the socket's address and the
request's headers, and gets back the address to log as ``peer``.

Proxies *append* to ``X-Forwarded-For`` (and ``Forwarded``): whatever stands
to the left of the entries our own proxies added was written by the client
and proves nothing. So, as uvicorn's ``--forwarded-allow-ips``, Werkzeug's
``ProxyFix`` and Envoy's ``xff_num_trusted_hops`` do, the client is found by
walking from the right:

1. the TCP peer must itself be a trusted proxy, or no header is read at all
   (the peer is the TCP peer);
2. each entry, right to left, that is a trusted proxy's address is skipped;
3. the first entry that is not is the client. When every entry is a trusted
   proxy, the left-most one is.

On Knative the chain is ``client -> Kourier gateway (Envoy) -> [activator]
-> queue-proxy -> this server``: the queue-proxy connects from loopback in
the same pod; the gateway appends the address it saw the client connect
from, the activator (when it is in the path: scale from zero, burst
capacity) appends the gateway pod's address, the queue-proxy appends the
address of whichever of the two connected to it. Those are pod addresses in
a private range, so the default trusts loopback and the private ranges
(``private``) and the client is the entry the gateway added. A client inside
the cluster (itself at a private address) can still put any address in front
of its own: set ``WS_TRUSTED_PROXIES`` to the cluster's pod range to narrow
that.

Untrusted, malformed (an entry that is not an IP address) or oversized
headers are ignored; the socket peer is used instead. Nothing here raises on
any input.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "FORWARDED_HEADERS",
    "MAX_ENTRIES",
    "MAX_HEADER_CHARS",
    "PRIVATE_NETWORKS",
    "TrustedProxies",
    "client_address",
    "format_peer",
    "parse_forwarded",
    "parse_trusted",
    "parse_x_forwarded_for",
    "resolve_peer",
    "trusted_from",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The headers the server can take the client from (``WS_FORWARDED_HEADER``).
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "none")
#: Of a longer header only the last this many characters are read, less
#: the entry they cut through (Tornado caps the whole head at 16 KiB; a
#: real chain of a few proxies is well under 1 KiB).
MAX_HEADER_CHARS = 4096
#: At most this many entries are read, from the right.
MAX_ENTRIES = 32
#: Longest entry worth parsing: ``[ipv6%zone]:port`` fits.
_MAX_ENTRY_CHARS = 64

#: ``private``: loopback, RFC 1918, RFC 6598 shared space, link-local and
#: IPv6 unique-local: where pods, nodes and in-cluster proxies live.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)


class TrustedProxies:
    """A set of networks whose forwarded entries are believed; ``any`` trusts all."""

    __slots__ = ("any", "networks")

    def __init__(self, networks: Iterable[Network] = (), any: bool = False) -> None:
        self.networks = tuple(networks)
        self.any = any

    def __contains__(self, address: Address) -> bool:
        if self.any:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)

    def __bool__(self) -> bool:
        return self.any or bool(self.networks)


def parse_trusted(raw: str) -> TrustedProxies:
    """``WS_TRUSTED_PROXIES``: ``private``, ``none``, ``*``, or a comma-separated
    list of addresses and CIDR ranges (``private`` may be one of the items).

    Raises ValueError with what was expected."""
    items = [item.strip().lower() for item in raw.split(",") if item.strip()]
    if not items or items == ["none"]:
        return TrustedProxies()
    if items == ["*"]:
        return TrustedProxies(any=True)
    networks: list[Network] = []
    for item in items:
        if item == "private":
            networks.extend(ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an address or CIDR range: expected 'private', 'none', '*' "
                "or a comma-separated list like 127.0.0.1,10.0.0.0/8"
            ) from None
    return TrustedProxies(networks)


def _address(entry: str) -> Address | None:
    """An IP address from one forwarded entry (``1.2.3.4``, ``1.2.3.4:80``,
    ``[::1]:80``, ``::1``, quoted), or None."""
    entry = entry.strip().strip('"').strip()
    if not entry or len(entry) > _MAX_ENTRY_CHARS:
        return None
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return None
        entry = entry[1:end]
    elif entry.count(":") == 1:  # IPv4 with a port
        entry = entry.split(":", 1)[0]
    try:
        return ipaddress.ip_address(entry.split("%", 1)[0])
    except ValueError:
        return None


def _entries(value: str, split: str = ",") -> list[str] | None:
    """The last MAX_ENTRIES entries within the header's last
    MAX_HEADER_CHARS characters, left to right (None if no whole entry is
    there). What is cut off is the left: what a client wrote, never what
    the proxies after it appended."""
    if len(value) > MAX_HEADER_CHARS:
        value = value[-MAX_HEADER_CHARS:]
        cut = value.find(split)
        if cut < 0:
            return None
        value = value[cut + 1 :]
    return value.rsplit(split, MAX_ENTRIES)[-MAX_ENTRIES:]


def _forwarded_for(element: str) -> Address | None:
    """The ``for=`` address of one ``Forwarded`` element, or None."""
    for pair in element.split(";"):
        name, sep, val = pair.partition("=")
        if sep and name.strip().lower() == "for":
            return _address(val)
    return None


def _parse_all(value: str, parse: Callable[[str], Address | None]) -> list[Address] | None:
    entries = _entries(value)
    if entries is None:
        return None
    out: list[Address] = []
    for entry in entries:
        address = parse(entry)
        if address is None:
            return None
        out.append(address)
    return out


def parse_x_forwarded_for(value: str) -> list[Address] | None:
    """The addresses of an ``X-Forwarded-For`` value, left to right (the last
    MAX_ENTRIES); None when it is oversized or any entry is not an address."""
    return _parse_all(value, _address)


def parse_forwarded(value: str) -> list[Address] | None:
    """The ``for=`` addresses of an RFC 7239 ``Forwarded`` value, left to
    right; None when oversized, or an element has no usable ``for=`` (an
    obfuscated identifier or ``unknown`` included)."""
    return _parse_all(value, _forwarded_for)


def format_peer(host: str, port: int | None = None) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_address(
    socket_host: str,
    header_values: Sequence[str],
    trusted: TrustedProxies,
    header: str = "x-forwarded-for",
) -> str | None:
    """The client's address as the trusted proxies saw it, or None when the
    socket peer is to be used (untrusted peer, no header, or a malformed or
    oversized one).

    ``header_values`` are the values of ``header`` in the request, in order
    (a header sent twice counts as one list, as RFC 9110 says)."""
    if header == "none" or not header_values or not trusted:
        return None
    socket_ip = _address(socket_host)
    if socket_ip is None or socket_ip not in trusted:
        return None
    if header == "x-real-ip":
        if len(header_values) != 1:
            return None
        single = _address(header_values[0]) if "," not in header_values[0] else None
        return str(single) if single is not None else None
    entries = _entries(",".join(header_values))
    if not entries:
        return None
    parse = _forwarded_for if header == "forwarded" else _address
    # Right to left; only the entries the walk reaches are parsed, so what a
    # client wrote to the left of its own address cannot change the answer.
    address: Address | None = None
    for entry in reversed(entries):
        address = parse(entry)
        if address is None:
            return None  # malformed where it matters: use the socket peer
        if address not in trusted:
            return _show(address)
    return _show(address) if address is not None else None


def _show(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=8)
def trusted_from(items: tuple[str, ...]) -> TrustedProxies:
    """:func:`parse_trusted` of a setting's items, parsed once (keyed by
    configuration, never by client data)."""
    return parse_trusted(",".join(items))


def resolve_peer(
    socket_address: object,
    remote_ip: str | None,
    header_values: Sequence[str],
    trusted_items: tuple[str, ...],
    header: str,
) -> tuple[str, str]:
    """(peer, socket peer) for a request: the client as the trusted proxies
    name it (``host``, no port) or else the socket peer (``host:port``), and
    the socket peer. ``socket_address`` is the connection's address tuple,
    when there is one; ``remote_ip`` the fallback."""
    host: str | None = None
    if isinstance(socket_address, tuple) and len(socket_address) >= 2:
        host = str(socket_address[0])
        sock = format_peer(host, int(socket_address[1]))
    else:
        host = remote_ip
        sock = remote_ip or "unknown"
    if len(sock) > 64:  # a socket address is never this long; be safe anyway
        sock = sock[:64]
    client = None
    if host is not None:
        client = client_address(host, header_values, trusted_from(trusted_items), header)
    return (client or sock), sock
