"""Reading an HTTP response body within a byte cap and an overall deadline.

A per-read timeout alone lets a server that sends one byte every few seconds hold the reader for
ever, and a body without a length can be endless. The body is read as it arrives (``read1``), so
the deadline is checked between arrivals.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
import urllib3.exceptions

CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The body is longer than the cap (declared or seen)."""


class BodyTooSlow(Exception):
    """The body was still arriving at the deadline."""


class BodyBroken(Exception):
    """The connection failed or timed out while the body was read."""


def read_bounded(
    response: requests.Response,
    *,
    max_bytes: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> bytes:
    """The whole body of a ``stream=True`` response; raises ``BodyTooLarge``, ``BodyTooSlow`` or ``BodyBroken``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(int(declared))
    body = bytearray()
    try:
        while True:
            if clock() > deadline:
                raise BodyTooSlow(len(body))
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > max_bytes:
                raise BodyTooLarge(len(body))
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise BodyBroken(type(exc).__name__) from None
