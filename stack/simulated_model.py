"""``traffic run --simulated-model``: the provider simulator on loopback as the demo's vision model, so that
a newcomer without a key sees what the product is for: verdicts of every level, alerts, key cool-downs,
dead letters. Every verdict it makes says so: its ``llmModel`` starts with ``simulated``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stack.provider_sim import ProviderSimulator, SimAccount, SimConfig, SimKey

SIMULATED_MODEL = "simulated-qwen-vl"
"""The ``llmModel`` of every simulated verdict (the simulator reports it whatever the request names)."""
LEVELS = {"none": 0.35, "low": 0.25, "medium": 0.25, "high": 0.15}
"""Risk levels of the simulated verdicts: alerts (medium and above) come within a minute."""
KEYS = (
    # key id, account, requests/min of the key (the pool is told a little less than the provider enforces)
    ("sim-a1", "sim-account-a", 12),
    ("sim-a2", "sim-account-a", 12),
    ("sim-b1", "sim-account-b", 6),
)
ACCOUNT_RPM = {"sim-account-a": 20, "sim-account-b": 6}


@dataclass(frozen=True)
class SimulatedModel:
    """A running simulator and what the stack's processes need to use it."""

    simulator: ProviderSimulator
    env: dict[str, str]
    """``TRAFFIC_LLM_BASE_URL``, ``TRAFFIC_API_KEYS_FILE`` and the model name, for the children."""
    keys_file: Path

    def close(self) -> None:
        """Stop the simulator and remove its keys file."""
        self.simulator.close()
        self.keys_file.unlink(missing_ok=True)

    def __enter__(self) -> SimulatedModel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def simulator_config(secrets_by_id: dict[str, str], *, seed: int = 0) -> SimConfig:
    """What the demo's simulated provider does: per-key and per-account limits, a few throttles, server
    errors and malformed replies (so cool-downs, retries, repairs and the odd dead letter show), and
    some latency, as a real provider has."""
    keys = {secrets_by_id[k]: SimKey(account=account, rpm_limit=rpm, key_id=k) for k, account, rpm in KEYS}
    return SimConfig(
        keys=keys,
        accounts={account: SimAccount(rpm_limit=rpm) for account, rpm in ACCOUNT_RPM.items()},
        throttle_rate=0.05,
        fail_rate_5xx=0.04,
        malformed_rate=0.04,
        malformed_variants=("not_json", "prose_wrapped", "missing_fields", "truncated"),
        latency_ms=700.0,
        jitter_ms=900.0,
        levels=dict(LEVELS),
        reply_model=SIMULATED_MODEL,
        seed=seed,
    )


def keys_yaml(secrets_by_id: dict[str, str]) -> str:
    """The key pool's configuration for the simulated keys (limits a little under the simulator's)."""
    lines = ["# Written by `traffic run --simulated-model`: keys of the local provider simulator, not real ones."]
    lines.append("keys:")
    for key_id, account, rpm in KEYS:
        lines += [
            f"  - key_id: {key_id}",
            f"    api_key: {secrets_by_id[key_id]}",
            f"    account: {account}",
            f"    rpm_limit: {max(1, rpm - 2)}",
        ]
    lines.append("accounts:")
    for account, rpm in ACCOUNT_RPM.items():
        lines += [f"  - id: {account}", f"    rpm_limit: {max(1, rpm - 2)}"]
    return "\n".join(lines) + "\n"


def start_simulated_model(run_dir: Path) -> SimulatedModel:
    """Start the simulator on a free loopback port with fresh keys; the keys file goes in ``run_dir``."""
    secrets_by_id = {key_id: f"sk-sim-{secrets.token_hex(12)}" for key_id, _, _ in KEYS}
    simulator = ProviderSimulator(simulator_config(secrets_by_id), host="127.0.0.1", port=0).start()
    run_dir.mkdir(parents=True, exist_ok=True)
    keys_file = run_dir / "simulated_api_keys.yaml"
    keys_file.unlink(missing_ok=True)
    keys_file.touch(mode=0o600)
    keys_file.write_text(keys_yaml(secrets_by_id), encoding="utf-8")
    env = {
        "TRAFFIC_LLM_BASE_URL": simulator.base_url,
        "TRAFFIC_API_KEYS_FILE": str(keys_file.resolve()),
        "TRAFFIC_LLM_MODEL": SIMULATED_MODEL,
        "TRAFFIC_LLM_ENABLED": "true",
    }
    return SimulatedModel(simulator, env, keys_file)
