"""A resolver for tests that never sends a DNS query: test traffic stays on this machine."""

from __future__ import annotations

PUBLIC_ADDRESS = "93.184.216.34"
"""What every other name resolves to: a public address (nothing in the tests connects to it)."""


def resolve(host: str) -> list[str]:
    """``localhost`` is loopback, ``*.invalid`` does not resolve, any other name is public."""
    if host in ("localhost", "localhost.localdomain"):
        return ["127.0.0.1", "::1"]
    if host.endswith(".invalid"):
        raise OSError(f"{host} does not resolve")
    return [PUBLIC_ADDRESS]
