"""Host name resolution for the camera URL policy (``traffic.url_policy``)."""

from __future__ import annotations

import socket


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6); raises ``OSError`` when it does not resolve."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
