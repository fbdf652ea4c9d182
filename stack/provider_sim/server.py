"""The HTTP front: a threaded server, its request handler and ``ProviderSimulator``, the public class.

Serves ``POST /v1/chat/completions`` (also ``/chat/completions`` and
``/compatible-mode/v1/chat/completions``), ``GET /health``, ``GET /stats``, ``GET /_requests`` and
``POST /_control``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from stack.provider_sim.config import SimAccount, SimConfig, SimKey
from stack.provider_sim.core import SimulatorCore
from stack.provider_sim.faults import Reply, ScriptStep, json_reply

log = logging.getLogger(__name__)

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/compatible-mode/v1/chat/completions"})
MAX_BODY_BYTES = 32 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that can cut its open keep-alive connections on close."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], core: SimulatorCore, stop: threading.Event) -> None:
        self.core = core
        self.stop = stop
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Shut down every open client connection so handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the simulator core."""

    protocol_version = "HTTP/1.1"
    server_version = "ProviderSim/1"

    @property
    def _srv(self) -> _Server:
        server = self.server
        assert isinstance(server, _Server)
        return server

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            message = format % args
            log.debug("%s %s", self.address_string(), message)

    def do_GET(self) -> None:
        """Health, stats and recorded requests."""
        path = self.path.split("?", 1)[0]
        core = self._srv.core
        if path in ("/health", "/v1/health"):
            self._send(json_reply(200, {"status": "ok"}))
        elif path == "/stats":
            self._send(json_reply(200, core.stats()))
        elif path == "/_requests":
            self._send(json_reply(200, core.recorded()))
        else:
            self._send(json_reply(404, {"error": {"code": "NotFound", "message": path}}))

    def do_POST(self) -> None:
        """Chat completions and control."""
        path = self.path.split("?", 1)[0]
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._send(json_reply(411, {"error": {"code": "LengthRequired", "message": "length required"}}))
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(json_reply(413, {"error": {"code": "TooLarge", "message": "body too large"}}))
            return
        raw = self.rfile.read(length)
        core = self._srv.core
        if path in CHAT_PATHS:
            core.enter()
            try:
                reply = core.handle_chat(path, self.headers.get("Authorization"), raw)
                if reply.delay_s > 0 and self._srv.stop.wait(reply.delay_s):
                    self.close_connection = True
                    return
                self._send(reply)
            finally:
                core.leave()
        elif path == "/_control":
            try:
                command = json.loads(raw or b"{}")
                if not isinstance(command, dict):
                    raise ValueError("control body must be a JSON object")
                self._send(json_reply(200, core.control(command)))
            except (ValueError, TypeError, KeyError) as exc:
                self._send(json_reply(400, {"ok": False, "error": str(exc)}))
        else:
            self._send(json_reply(404, {"error": {"code": "NotFound", "message": path}}))

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", f"{reply.content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class ProviderSimulator:
    """The simulator as a local HTTP server on a background thread; also a context manager."""

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.core = SimulatorCore(config or SimConfig())
        self._address = (host, port)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ProviderSimulator:
        """Bind and serve; returns self."""
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server(self._address, self.core, self._stop)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="provider-sim",
            daemon=True,
        )
        self._thread.start()
        log.info("provider simulator listening on %s", self.base_url)
        return self

    def close(self) -> None:
        """Stop serving, end hanging requests and close connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.cut_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("provider simulator stopped")

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def config(self) -> SimConfig:
        """The current configuration."""
        return self.core.config

    def update(self, **changes: Any) -> SimConfig:
        """Change config fields at run time (same values as :meth:`SimConfig.from_dict`)."""
        return self.core.update(changes)

    def reset(self) -> None:
        """Clear counters, windows and recordings."""
        self.core.reset()

    def script(self, *steps: ScriptStep) -> None:
        """Replace the pending scripted replies."""
        self.core.script(*steps)

    def set_key(self, api_key: str, spec: SimKey | None = None) -> None:
        """Add or replace a key."""
        self.core.set_key(api_key, spec)

    def remove_key(self, api_key: str) -> None:
        """Forget a key."""
        self.core.remove_key(api_key)

    def set_account(self, account: str, spec: SimAccount) -> None:
        """Add or replace an account's limits."""
        self.core.set_account(account, spec)

    def reject_key(self, api_key: str) -> None:
        """Answer this key 401 InvalidApiKey from now on."""
        self.core.reject_key(api_key)

    def arrears_key(self, api_key: str) -> None:
        """Answer this key 400 Arrearage from now on."""
        self.core.arrears_key(api_key)

    def restore_key(self, api_key: str) -> None:
        """Undo reject_key / arrears_key."""
        self.core.restore_key(api_key)

    def control(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run a ``POST /_control`` command in process."""
        return self.core.control(command)

    def stats(self) -> dict[str, Any]:
        """Counters, as ``GET /stats`` returns them."""
        return self.core.stats()

    def key_label(self, api_key: str) -> str:
        """The label ``api_key`` has in stats."""
        return self.core.label(api_key)

    def last_request(self) -> dict[str, Any] | None:
        """JSON body of the latest chat request."""
        return self.core.last_request()

    def recorded(self) -> list[dict[str, Any]]:
        """Recent chat requests, oldest first."""
        return self.core.recorded()
