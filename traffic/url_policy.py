"""Which camera URLs the server may open: a guard against server-side request forgery.

A camera URL names something the server connects to on a client's behalf, so a client could point
it at the cloud metadata service, the server's own Redis or exporters, or anything on the private
network behind it. The policy checks every address the host resolves to (not the spelling: every
numeric form is normalised first) against denied ranges, unless config allows the host or its
network; file sources are allowed only below a configured media directory. Callers check again
before each connection and each redirect, since DNS answers can change.

Pure: the resolver is passed in (``infra.camera_sources.resolve_host`` in the processes).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from traffic.cameras import NETWORK_SCHEMES, local_path, validate_camera_url
from traffic.errors import CameraError
from traffic.settings import CaptureSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]
"""Host name → the addresses it resolves to (raises ``OSError`` when it does not resolve)."""

DENIED_RANGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
    ("carrier-grade NAT", ("100.64.0.0/10",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("reserved", ("240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15")),
)
"""Address ranges a camera may not be in unless allowed: (rule name, CIDRs). 169.254.169.254, the cloud
metadata address, is link-local; 255.255.255.255 is reserved."""
_DENIED = tuple((name, tuple(ipaddress.ip_network(cidr) for cidr in cidrs)) for name, cidrs in DENIED_RANGES)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlDenied(CameraError):
    """The URL is well-formed but the policy forbids opening it; ``rule`` names the rule that denied it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__("url_denied", message)
        self.rule = rule


@dataclass(frozen=True)
class UrlPolicy:
    """What camera URLs may name."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (exact, case-insensitive) and IP networks (CIDR or single address) allowed even if their
    addresses are in a denied range."""
    allow_files: bool = False
    """Whether local files (``file://`` or a bare path) may be cameras at all."""
    media_dir: str | None = None
    """File sources must lie below this directory (after resolving links); None allows none."""

    def with_files(self, allowed: bool) -> UrlPolicy:
        """The same policy with file sources allowed or not (web clients get them only when configured)."""
        return UrlPolicy(self.allowed_hosts, allowed, self.media_dir)


def policy_of(capture: CaptureSettings) -> UrlPolicy:
    """The camera URL policy the capture settings describe."""
    return UrlPolicy(capture.allowed_hosts, capture.allow_file_sources, capture.media_dir)


@functools.lru_cache(maxsize=64)
def _parsed(entries: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
    """``parse_allowed_hosts`` of a configured allowlist, parsed once (it is checked at every connect)."""
    return parse_allowed_hosts(entries)


def parse_allowed_hosts(entries: Sequence[str]) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
    """(host names, networks) of an allowlist; raises ``ValueError`` for an entry that is neither."""
    names: list[str] = []
    networks: list[IPNetwork] = []
    for entry in entries:
        text = entry.strip().lower().rstrip(".")
        if not text:
            raise ValueError("an empty entry")
        try:
            networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if "/" in text or ":" in text or any(ch.isspace() for ch in text):
            raise ValueError(f"{entry!r} is neither a host name nor an IP network")
        names.append(text)
    return tuple(names), tuple(networks)


def check_camera_url(url: object, policy: UrlPolicy, resolve: Resolver) -> str:
    """``url`` if the policy lets the server open it; raises ``CameraError`` (``UrlDenied`` for the policy).

    Nothing is contacted: a network URL's host is resolved, a file's path is looked at.
    """
    checked = validate_camera_url(url, allow_files=policy.allow_files)
    path = local_path(checked)
    if path is not None:
        check_file(path, policy)
    else:
        check_network_url(checked, policy, resolve)
    return checked


def check_file(path: str, policy: UrlPolicy) -> None:
    """A file source must lie below the media directory; raises ``UrlDenied``."""
    if not policy.allow_files:
        raise CameraError("file_sources_disabled", "file sources are disabled; use an rtsp, rtsps, http or https URL")
    if policy.media_dir is None:
        raise UrlDenied("media_dir", "file sources need a media directory (TRAFFIC_MEDIA_DIR)")
    media = Path(policy.media_dir).resolve()
    if not Path(path).resolve().is_relative_to(media):
        raise UrlDenied("outside_media_dir", "file sources must lie inside the media directory")


def check_network_url(url: str, policy: UrlPolicy, resolve: Resolver) -> None:
    """Every address of the URL's host must be outside the denied ranges, or allowed; raises ``CameraError``."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in NETWORK_SCHEMES:
        raise CameraError("scheme_not_allowed", "URL scheme is not allowed; use rtsp, rtsps, http or https")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CameraError("invalid_url", "camera URL has no host")
    names, networks = _parsed(tuple(policy.allowed_hosts))
    if host in names:
        return
    for address in addresses_of(host, resolve):
        if any(address in network for network in networks):
            continue
        rule = denied_range(address)
        if rule is not None:
            raise UrlDenied(
                rule,
                f"the camera's host is a {rule} address, which cameras may not use; "
                "allow it with TRAFFIC_CAMERA_ALLOWED_HOSTS",
            )


def addresses_of(host: str, resolve: Resolver) -> list[IPAddress]:
    """The host's addresses: a numeric host in any spelling, else what ``resolve`` answers."""
    numeric = numeric_host(host)
    if numeric is not None:
        return [numeric]
    try:
        found = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host)]
    except (OSError, UnicodeError, ValueError):
        raise CameraError("unresolvable_host", "the camera's host name does not resolve") from None
    if not found:
        raise CameraError("unresolvable_host", "the camera's host name does not resolve")
    return found


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host names, in every form ``inet_aton`` accepts (``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``), or an IPv6 literal; None for a host name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    try:
        numbers = [_inet_number(part) for part in parts]
    except ValueError:
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    return ipaddress.IPv4Address(_join(head, last))


def _join(head: list[int], last: int) -> int:
    """The 32-bit value of ``inet_aton``'s a / a.b / a.b.c / a.b.c.d forms (``last`` fills the rest)."""
    value = 0
    for n in head:
        value = value << 8 | n
    return value << 8 * (4 - len(head)) | last


def _inet_number(part: str) -> int:
    """One ``inet_aton`` component: decimal, ``0x`` hex or ``0``-led octal; ``ValueError`` otherwise."""
    if not part:
        raise ValueError("empty")
    if part.lower().startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    if not part.isdigit() or not part.isascii():
        raise ValueError("not a number")
    return int(part)


def denied_range(address: IPAddress) -> str | None:
    """The name of the denied range ``address`` is in (IPv4 inside IPv6 checked as IPv4), or None."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return denied_range(embedded)
    for name, networks in _DENIED:
        if any(address in network for network in networks):
            return name
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
