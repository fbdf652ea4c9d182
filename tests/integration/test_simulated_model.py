"""``traffic run --simulated-model``'s provider: the key pool's configuration it writes loads as real
settings do, and every verdict it makes names the simulated model, whatever the request asks for."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import requests

from stack.simulated_model import ACCOUNT_RPM, KEYS, SIMULATED_MODEL, start_simulated_model
from traffic.config import load_settings

pytestmark = pytest.mark.integration


def test_the_keys_file_loads_as_the_stack_reads_it(tmp_path: Path) -> None:
    with start_simulated_model(tmp_path) as simulated:
        assert stat.S_IMODE(simulated.keys_file.stat().st_mode) == 0o600
        settings = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", **simulated.env})
        assert [k.key_id for k in settings.keys.keys] == [key_id for key_id, _, _ in KEYS]
        assert {a.account_id for a in settings.keys.accounts} == set(ACCOUNT_RPM)
        assert settings.llm.base_url == simulated.simulator.base_url and settings.llm.model == SIMULATED_MODEL
        assert simulated.simulator.base_url.startswith("http://127.0.0.1:")
    assert not simulated.keys_file.exists()  # the keys go with the simulator


def test_every_reply_names_the_simulated_model(tmp_path: Path) -> None:
    with start_simulated_model(tmp_path) as simulated:
        lines = simulated.keys_file.read_text().splitlines()
        secret = next(line.split(": ", 1)[1] for line in lines if "api_key" in line)
        body = {"model": "qwen-vl-max", "messages": [{"role": "user", "content": "a road"}]}
        models = set()
        for _ in range(5):
            reply = requests.post(
                f"{simulated.simulator.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )
            if reply.status_code == 200:
                models.add(reply.json()["model"])
        assert models == {SIMULATED_MODEL}
