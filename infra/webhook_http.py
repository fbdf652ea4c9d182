"""Webhook requests over HTTP (requests and urllib3: the one module that uses them for webhooks): one POST,
no redirects, no proxy from the environment, and connections only to the addresses the URL policy allows,
checked at connect time so a name re-pointed after the check (DNS rebinding) gains nothing."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection

from traffic.webhooks import Outcome, TargetDenied, TargetUnresolvable, classify, parse_retry_after

Guard = Callable[[str], list[str]]
"""Target host → the addresses a connection may use (raises ``TargetDenied`` / ``TargetUnresolvable``)."""


@dataclass(frozen=True)
class TryResult:
    """The answer to one POST: a status, or an error code (``timeout``, ``url_denied:<rule>`` …)."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    outcome: Outcome = Outcome.RETRY


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, guard: Guard) -> TryResult:
    """POST ``body`` once, without following redirects; connections go only to addresses ``guard`` allows.

    Errors become codes: the exceptions of requests quote the URL, whose query may be a token.
    """
    try:
        with requests.Session() as session:
            session.trust_env = False  # no proxy or .netrc from the environment: the guard checks the real peer
            session.mount("http://", GuardedAdapter(guard))
            session.mount("https://", GuardedAdapter(guard))
            response = session.post(
                url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False, stream=True
            )
            with response:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return TryResult(response.status_code, None, retry_after, classify(response.status_code))
    except TargetDenied as exc:
        return TryResult(error=f"url_denied:{exc.rule}", outcome=Outcome.REFUSED)
    except TargetUnresolvable:
        return TryResult(error="unresolvable_host")
    except requests.Timeout:
        return TryResult(error="timeout")
    except requests.ConnectionError:
        return TryResult(error="connection_failed")
    except requests.RequestException as exc:
        return TryResult(error=f"request_failed:{type(exc).__name__}", outcome=Outcome.REFUSED)


class _Guarded(HTTPConnection):
    """A connection that resolves its host itself and connects only to the addresses its guard allows,
    so a name that resolves elsewhere between a check and the connect (DNS rebinding) gains nothing."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    def _new_conn(self) -> socket.socket:
        """A socket to the first allowed address of the host that accepts."""
        failure: OSError | None = None
        for address in self._guard(self._dns_host):
            try:
                sock = connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                failure = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}")


class _GuardedHTTPS(_Guarded, HTTPSConnection):
    """The guarded connection with TLS (certificate and SNI still checked against the host name)."""


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _Guarded


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPS


class _GuardedPoolManager(PoolManager):
    """A pool manager whose pools make guarded connections."""

    def __init__(self, guard: Guard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard
        self.pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedHTTPSPool}

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["guard"] = self._guard
        return pool


class GuardedAdapter(HTTPAdapter):
    """A requests transport adapter that never retries and connects only where ``guard`` allows."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self.poolmanager = _GuardedPoolManager(
            self._guard, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )
