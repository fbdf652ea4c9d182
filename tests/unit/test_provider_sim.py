"""The provider simulator over real loopback HTTP: limits, faults, determinism, process mode."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from stack.provider_sim import (
    MALFORMED_VARIANTS,
    ProviderSimulator,
    SimAccount,
    SimConfig,
    SimKey,
    jpeg_size,
    make_verdict,
)

KEY_A = "sk-sim-alpha-00000000000001"
KEY_B = "sk-sim-bravo-00000000000002"
ROOT = Path(__file__).resolve().parents[2]


def _jpeg(width: int, height: int, filler: bytes = b"") -> bytes:
    """Just enough JPEG for the simulator: SOI and an SOF0 header, then filler."""
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03"
    return b"\xff\xd8" + sof + bytes(12) + filler


def _body(image: bytes = b"img", model: str = "qwen-vl-plus") -> dict[str, Any]:
    uri = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "system prompt"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "hi"}],
            },
        ],
    }


def _post(base_url: str, key: str | None, image: bytes = b"img") -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(base_url + "/chat/completions", json=_body(image), headers=headers, timeout=5)


def _content(response: requests.Response) -> str:
    text = response.json()["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    return text


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    config = SimConfig(
        keys={
            KEY_A: SimKey(key_id="alpha", account="acct", qps_limit=2),
            KEY_B: SimKey(key_id="bravo", account="acct", rpm_limit=3),
        },
        rpm_window_s=0.4,
    )
    with ProviderSimulator(config) as running:
        yield running


def test_per_key_qps_limit_is_enforced_and_counted(sim: ProviderSimulator) -> None:
    statuses = [_post(sim.base_url, KEY_A).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    throttled = _post(sim.base_url, KEY_A)
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["code"] == "Throttling.RateQuota"
    stats = sim.stats()
    alpha = stats["keys"]["alpha"]
    assert (alpha["requests"], alpha["accepted"], alpha["over_limit"]) == (4, 2, 2)
    assert stats["over_limit_by_reason"] == {"key_qps": 2}
    assert stats["accepted"] == 2 and stats["over_limit"] == 2
    assert stats["by_status"] == {"200": 2, "429": 2}


def test_per_key_rpm_window_slides(sim: ProviderSimulator) -> None:
    statuses = [_post(sim.base_url, KEY_B).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    time.sleep(0.45)
    assert _post(sim.base_url, KEY_B).status_code == 200
    assert sim.stats()["keys"]["bravo"]["over_limit"] == 1


def test_account_limit_is_shared_across_keys(sim: ProviderSimulator) -> None:
    sim.update(
        keys={KEY_A: {"key_id": "alpha", "account": "acct"}, KEY_B: {"key_id": "bravo", "account": "acct"}},
        accounts={"acct": {"rpm_limit": 3}},
        rpm_window_s=60,
    )
    statuses = [_post(sim.base_url, key).status_code for key in (KEY_A, KEY_B, KEY_A, KEY_B, KEY_A)]
    assert statuses == [200, 200, 200, 429, 429]
    stats = sim.stats()
    assert stats["accounts"]["acct"]["over_limit"] == 2
    assert stats["accounts"]["acct"]["accepted"] == 3
    assert stats["keys"]["alpha"]["over_limit"] == 1 and stats["keys"]["bravo"]["over_limit"] == 1
    assert stats["over_limit_by_reason"] == {"account_rpm": 2}


def test_account_token_limit(sim: ProviderSimulator) -> None:
    sim.set_key(KEY_A, SimKey(key_id="alpha", account="small"))
    sim.set_account("small", SimAccount(tpm_limit=300))
    image = _jpeg(280, 280)  # 100 patches + 2 = 102 image tokens, +5 for 16 chars of text, +60 completion
    first = _post(sim.base_url, KEY_A, image)
    assert first.json()["usage"] == {"prompt_tokens": 107, "completion_tokens": 60, "total_tokens": 167}
    second = _post(sim.base_url, KEY_A, image)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "Throttling.AllocationQuota"
    assert sim.stats()["accounts"]["small"]["tokens"] == 167


def test_concurrent_burst_never_exceeds_the_limit(sim: ProviderSimulator) -> None:
    # Three requests a minute (0.05 qps over a 60-s window): the ten threads' requests all fall in one
    # window however slowly a busy machine starts them (over a 1-s window a slow burst once let four in).
    sim.update(keys={KEY_A: {"key_id": "alpha", "qps_limit": 0.05}}, qps_window_s=60)
    results: list[int] = []
    lock = threading.Lock()

    def hit() -> None:
        status = _post(sim.base_url, KEY_A).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=hit) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] * 3 + [429] * 7
    assert sim.stats()["keys"]["alpha"]["over_limit"] == 7


def test_auth_failures(sim: ProviderSimulator) -> None:
    sim.reject_key(KEY_A)
    sim.arrears_key(KEY_B)
    unknown = _post(sim.base_url, "sk-sim-unknown-000000000009")
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"
    rejected = _post(sim.base_url, KEY_A)
    assert rejected.status_code == 401 and rejected.json()["code"] == "InvalidApiKey"
    arrears = _post(sim.base_url, KEY_B)
    assert arrears.status_code == 400 and arrears.json()["error"]["code"] == "Arrearage"
    assert _post(sim.base_url, None).status_code == 401
    sim.restore_key(KEY_A)
    assert _post(sim.base_url, KEY_A).status_code == 200
    sim.update(open_mode=True)
    assert _post(sim.base_url, "sk-anything-at-all-1234").status_code == 200
    assert "<unknown>" in sim.stats()["keys"]


def test_status_script_runs_in_order(sim: ProviderSimulator) -> None:
    sim.script(500, 429, 503, 200, "not_json")
    dashscope_style = sim.url + "/compatible-mode/v1"
    statuses = [_post(dashscope_style, KEY_B) for _ in range(6)]
    assert [r.status_code for r in statuses] == [500, 429, 503, 200, 200, 200]
    assert statuses[1].headers["Retry-After"] == "1"
    assert json.loads(_content(statuses[3]))["riskLevel"]
    with pytest.raises(ValueError):
        json.loads(_content(statuses[4]))
    assert sim.stats()["pending_script"] == 0


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
def test_malformed_variants(sim: ProviderSimulator, variant: str) -> None:
    sim.script(variant)
    response = _post(sim.base_url, KEY_A)
    assert response.status_code == 200
    if variant == "not_json_body":
        assert response.headers["Content-Type"].startswith("text/html")
        return
    choices = response.json()["choices"]
    if variant == "no_choices":
        assert choices == []
        return
    content = choices[0]["message"]["content"]
    if variant == "prose_wrapped":
        assert "```json" in content and '"riskLevel"' in content
    elif variant == "missing_fields":
        assert set(json.loads(content)) == {"riskLevel"}
    elif variant == "empty_content":
        assert content == ""
    elif variant == "no_verdict":
        assert set(json.loads(content)) == {"description"}
    elif variant == "truncated":
        head, _, cut = content.rpartition('"riskLevel": "')
        assert head.startswith("{") and len(cut) == 1, content  # cut off one letter into the level
    else:
        assert "{" not in content


def test_fault_rates(sim: ProviderSimulator) -> None:
    sim.update(fail_rate_5xx=1.0)
    assert _post(sim.base_url, KEY_B).status_code in (500, 503)
    sim.update(fail_rate_5xx=0.0, malformed_rate=1.0, malformed_variants=["empty_content"])
    assert _content(_post(sim.base_url, KEY_B)) == ""
    sim.update(malformed_rate=0.0, timeout_rate=1.0, hang_s=0.2)
    started = time.monotonic()
    assert _post(sim.base_url, KEY_B).status_code == 504
    assert time.monotonic() - started >= 0.2
    assert sim.stats()["timeouts"] == 1


def test_latency_is_injected(sim: ProviderSimulator) -> None:
    sim.update(latency_ms=150)
    started = time.monotonic()
    _post(sim.base_url, KEY_B)
    assert time.monotonic() - started >= 0.15


def test_replies_are_deterministic_per_image_and_seed(sim: ProviderSimulator) -> None:
    images = [f"frame-{i}".encode() for i in range(12)]
    sim.update(open_mode=True)
    once = [_content(_post(sim.base_url, "sk-open-key-00000001", img)) for img in images]
    again = [_content(_post(sim.base_url, "sk-open-key-00000002", img)) for img in images]
    assert once == again
    assert len(set(once)) > 1
    with ProviderSimulator(SimConfig(open_mode=True)) as twin:
        assert [_content(_post(twin.base_url, "sk-open-key-00000003", img)) for img in images] == once
    reseeded = [json.dumps(make_verdict(img, SimConfig(seed=7)), ensure_ascii=False) for img in images]
    assert reseeded != once


def test_verdict_shape_and_level_weights() -> None:
    config = SimConfig(levels={"high": 1.0})
    for i in range(20):
        verdict = make_verdict(f"img-{i}".encode(), config)
        assert set(verdict) == {
            "riskLevel",
            "confidence",
            "riskTypes",
            "description",
            "dangerObjectCount",
            "triggerObjectIds",
        }
        assert verdict["riskLevel"] == "high"
        assert 0.8 <= verdict["confidence"] <= 0.97
        assert 1 <= len(verdict["riskTypes"]) <= 3
        assert verdict["triggerObjectIds"] == list(range(1, verdict["dangerObjectCount"] + 1))
    calm = make_verdict(b"x", SimConfig(levels={"none": 1.0}))
    assert calm["riskLevel"] == "none" and calm["dangerObjectCount"] == 0


def test_control_endpoint(sim: ProviderSimulator) -> None:
    control = sim.url + "/_control"
    _post(sim.base_url, KEY_A)
    assert requests.post(control, json={"action": "reset"}, timeout=5).json()["ok"]
    assert sim.stats()["total"] == 0
    update = {"action": "update", "config": {"status_script": [503]}}
    assert requests.post(control, json=update, timeout=5).status_code == 200
    assert _post(sim.base_url, KEY_A).status_code == 503
    new_key = {"action": "set_key", "key": "sk-sim-charlie-0000000003", "key_id": "charlie", "rpm_limit": 1}
    assert requests.post(control, json=new_key, timeout=5).status_code == 200
    assert _post(sim.base_url, "sk-sim-charlie-0000000003").status_code == 200
    requests.post(control, json={"action": "arrears_key", "key": KEY_A}, timeout=5)
    assert _post(sim.base_url, KEY_A).status_code == 400
    assert requests.post(control, json={"action": "explode"}, timeout=5).status_code == 400
    assert requests.post(control, json={"action": "update", "config": {"nope": 1}}, timeout=5).status_code == 400
    stats = requests.get(sim.url + "/stats", timeout=5).json()
    assert stats["keys"]["charlie"]["accepted"] == 1
    assert requests.get(sim.url + "/health", timeout=5).json() == {"status": "ok"}
    assert requests.get(sim.url + "/_requests", timeout=5).json()[-1]["key"] == "alpha"


def test_never_logs_or_reports_full_keys(sim: ProviderSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.update(open_mode=True)
    for key in (KEY_A, KEY_A, KEY_A, KEY_B, "sk-sim-stranger-000000004"):
        _post(sim.base_url, key)
    exported = caplog.text + json.dumps([sim.stats(), sim.recorded()], ensure_ascii=False)
    for key in (KEY_A, KEY_B, "sk-sim-stranger-000000004"):
        assert key not in exported
    assert "…0004" in exported


def test_jpeg_size() -> None:
    assert jpeg_size(_jpeg(640, 360)) == (640, 360)
    assert jpeg_size(b"not a jpeg") is None


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimConfig(fail_rate_5xx=1.5)
    with pytest.raises(ValueError):
        SimConfig(status_script=("explode",))
    with pytest.raises(ValueError):
        SimConfig.from_dict({"unknown_field": 1})
    listed = SimConfig.from_dict({"keys": [{"api_key": KEY_A, "name": "alpha", "qps_limit": 2}]})
    assert listed.keys[KEY_A] == SimKey(key_id="alpha", qps_limit=2)


def test_subprocess_mode_prints_ready_and_serves(tmp_path: Path) -> None:
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"keys": {KEY_A: {"key_id": "alpha", "rpm_limit": 1}}}))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack.provider_sim", "--port", "0", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(10, proc.kill)  # a READY that never comes must not hang the suite
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1"), line
        base_url = line.split(" ", 1)[1]
        assert [_post(base_url, KEY_A).status_code for _ in range(2)] == [200, 429]
        stats = requests.get(base_url.removesuffix("/v1") + "/stats", timeout=5).json()
        assert stats["keys"]["alpha"]["over_limit"] == 1
    finally:
        watchdog.cancel()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
