"""The camera URL policy: denied address ranges in every spelling, the allowlist, the media directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from traffic.errors import CameraError
from traffic.url_policy import UrlDenied, UrlPolicy, check_camera_url, denied_range, numeric_host, parse_allowed_hosts

DNS = {
    "localhost": ["127.0.0.1", "::1"],
    "cam.example": ["93.184.216.34"],
    "mixed.example": ["93.184.216.34", "10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "v6.example": ["2606:4700::6810:84e5"],
    "v6-local.example": ["fe80::1%eth0"],
}


def resolve(host: str) -> Sequence[str]:
    """A fake DNS (no lookups leave the test)."""
    if host not in DNS:
        raise OSError(f"unknown host {host}")
    return DNS[host]


DEFAULT = UrlPolicy()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:6379/", "loopback"),
        ("http://[::1]:9800/metrics", "loopback"),
        ("rtsp://10.0.0.5/stream", "private"),
        ("rtsp://172.16.4.2/stream", "private"),
        ("http://192.168.1.1/snap.jpg", "private"),
        ("http://100.64.0.7/", "carrier-grade NAT"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0:5000/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://255.255.255.255/", "reserved"),
        ("http://[fd00::1]/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[ff02::1]/", "multicast"),
        # other spellings of the same addresses
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[2002:7f00:1::]/", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ("http://localhost./", "loopback"),
        ("http://LOCALHOST/", "loopback"),
        ("HTTP://127.0.0.1/", "loopback"),
        ("http://user@127.0.0.1/", "loopback"),
        ("http://user:pw@127.0.0.1:80/x", "loopback"),
        ("rtsps://metadata.example/", "link-local"),
        ("http://mixed.example/", "private"),
        ("http://v6-local.example/", "link-local"),
    ],
)
def test_denied_addresses_in_every_spelling(url: str, rule: str) -> None:
    with pytest.raises(UrlDenied) as denied:
        check_camera_url(url, DEFAULT, resolve)
    assert denied.value.code == "url_denied" and denied.value.rule == rule
    message = str(denied.value)
    assert rule in message and "TRAFFIC_CAMERA_ALLOWED_HOSTS" in message
    assert "127.0.0" not in message and "169.254" not in message and "pw" not in message, "no internals"


@pytest.mark.parametrize(
    "url", ["http://cam.example/snap.jpg", "rtsp://93.184.216.34:554/live", "https://v6.example/x", "rtsp://8.8.8.8/"]
)
def test_public_addresses_pass(url: str) -> None:
    assert check_camera_url(url, DEFAULT, resolve) == url


def test_an_unresolvable_host_is_refused_without_contacting_anything() -> None:
    with pytest.raises(CameraError) as refused:
        check_camera_url("rtsp://nowhere.example/", DEFAULT, resolve)
    assert refused.value.code == "unresolvable_host"


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        (("127.0.0.1",), "http://127.0.0.1:8080/snap.jpg"),
        (("127.0.0.0/8",), "http://0x7f.1:8080/snap.jpg"),
        (("10.0.0.0/24",), "rtsp://10.0.0.5/stream"),
        (("localhost",), "http://localhost:8080/"),
        (("LocalHost.",), "http://localhost./"),
        (("::1",), "http://[::1]:9/"),
    ],
)
def test_the_allowlist_opens_hosts_and_networks(allowed: tuple[str, ...], url: str) -> None:
    assert check_camera_url(url, UrlPolicy(allowed_hosts=allowed), resolve) == url


def test_an_allowed_network_covers_only_itself() -> None:
    policy = UrlPolicy(allowed_hosts=("10.0.0.0/24",))
    with pytest.raises(UrlDenied):
        check_camera_url("rtsp://10.0.1.5/stream", policy, resolve)
    with pytest.raises(UrlDenied, match="private"):
        check_camera_url("http://mixed.example/", UrlPolicy(allowed_hosts=("93.184.216.34",)), resolve)


@pytest.mark.parametrize("entry", ["", "10.0.0.0/33", "not a host", "http://x/", "a:b"])
def test_bad_allowlist_entries_are_errors(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_allowed_hosts([entry])


def test_file_sources_need_the_switch_and_the_media_directory(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.avi"
    clip.write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (media / "link.jpg").symlink_to(outside)
    with pytest.raises(CameraError) as disabled:
        check_camera_url(str(clip), DEFAULT, resolve)
    assert disabled.value.code == "file_sources_disabled"
    with pytest.raises(UrlDenied) as no_media:
        check_camera_url(str(clip), UrlPolicy(allow_files=True), resolve)
    assert no_media.value.rule == "media_dir"
    policy = UrlPolicy(allow_files=True, media_dir=str(media))
    assert check_camera_url(str(clip), policy, resolve) == str(clip)
    assert check_camera_url(clip.as_uri(), policy, resolve) == clip.as_uri()
    for escape in (str(outside), str(media / ".." / "secret.jpg"), str(media / "link.jpg")):
        with pytest.raises(UrlDenied) as denied:
            check_camera_url(escape, policy, resolve)
        assert denied.value.rule == "outside_media_dir"
    assert policy.with_files(False).allow_files is False


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("1.2.65535", "1.2.255.255"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("256.1.1.1", None),
        ("1.2.3.4.5", None),
        ("4294967296", None),
        ("cam.example", None),
        ("0x", "0.0.0.0"),
    ],
)
def test_numeric_hosts(host: str, address: str | None) -> None:
    found = numeric_host(host)
    assert (str(found) if found is not None else None) == address


def test_public_ranges_are_not_denied() -> None:
    import ipaddress

    for address in ("8.8.8.8", "93.184.216.34", "2606:4700::1", "100.128.0.1", "172.32.0.1", "11.0.0.1"):
        assert denied_range(ipaddress.ip_address(address)) is None, address
