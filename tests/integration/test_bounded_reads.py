"""A server that drips bytes or sends an endless body cannot hold a worker: byte caps and overall deadlines.

The servers are raw loopback sockets, so they can misbehave in ways a well-behaved HTTP server won't.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from infra.camera_sources import MAX_SNAPSHOT_BYTES, SnapshotSource, SourceError
from traffic.errors import BadModelReply, ProviderUnavailable
from traffic.vision_client import MAX_REPLY_BYTES, VisionClient

pytestmark = pytest.mark.integration

KEY = "sk-test-bounded-0123456789"
Behaviour = Callable[[socket.socket], None]


class RawServer:
    """Accepts connections on loopback and hands each to ``behave`` (after reading the whole request)."""

    def __init__(self, behave: Behaviour) -> None:
        self._behave = behave
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            try:
                self._behave(conn)
            except OSError:
                pass  # the client gave up: that is the point

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


def drip(content_type: str, length: int, every_s: float = 0.2) -> Behaviour:
    """Headers at once, then one byte every ``every_s`` (each under the per-read timeout)."""

    def behave(conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        conn.sendall(head.encode())
        for _ in range(length):
            conn.sendall(b"x")
            time.sleep(every_s)

    return behave


def flood(content_type: str, size: int, *, declare: bool) -> Behaviour:
    """A body of ``size`` bytes, its length declared or sent chunked without one."""

    def behave(conn: socket.socket) -> None:
        if declare:
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n".encode())
            block = b"x" * 65536
            for _ in range(size // len(block) + 1):
                conn.sendall(block)
            return
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        block = b"x" * 65536
        for _ in range(size // len(block) + 1):
            conn.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    return behave


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], RawServer]]:
    servers: list[RawServer] = []

    def start(behave: Behaviour) -> RawServer:
        server = RawServer(behave)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _client(server: RawServer, timeout_s: float) -> VisionClient:
    return VisionClient(f"http://127.0.0.1:{server.port}/v1", "qwen-vl-plus", timeout_s=timeout_s)


def test_a_model_reply_dripping_in_ends_at_the_timeout(serve: Callable[[Behaviour], RawServer]) -> None:
    server = serve(drip("application/json", 200))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        _client(server, timeout_s=1.0).complete(KEY, system="s", user="u", image_jpeg=b"\xff\xd8jpeg")
    assert time.monotonic() - started < 3.0, "the whole call is bounded, not each read"


@pytest.mark.parametrize("declare", [True, False])
def test_an_oversized_model_reply_is_refused(serve: Callable[[Behaviour], RawServer], declare: bool) -> None:
    server = serve(flood("application/json", MAX_REPLY_BYTES + 1, declare=declare))
    with pytest.raises(BadModelReply, match="larger than"):
        _client(server, timeout_s=10.0).complete(KEY, system="s", user="u", image_jpeg=b"\xff\xd8jpeg")


def test_a_snapshot_dripping_in_ends_at_the_timeout(serve: Callable[[Behaviour], RawServer]) -> None:
    server = serve(drip("image/jpeg", 200))
    source = SnapshotSource(
        f"http://127.0.0.1:{server.port}/snap.jpg", poll_interval_s=0.01, timeout_s=1.0, stop=threading.Event()
    )
    started = time.monotonic()
    with pytest.raises(SourceError, match="too slow"):
        source.read()
    source.close()
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("declare", [True, False])
def test_an_oversized_snapshot_is_refused(serve: Callable[[Behaviour], RawServer], declare: bool) -> None:
    server = serve(flood("image/jpeg", MAX_SNAPSHOT_BYTES + 1, declare=declare))
    source = SnapshotSource(
        f"http://127.0.0.1:{server.port}/snap.jpg", poll_interval_s=0.01, timeout_s=10.0, stop=threading.Event()
    )
    with pytest.raises(SourceError, match="larger than"):
        source.read()
    source.close()
