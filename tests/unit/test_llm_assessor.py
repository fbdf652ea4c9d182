"""The LLM group assessor end to end over real HTTP against the provider simulator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from traffic.analysis import analyse_detections
from traffic.errors import BadModelReply, KeyRejected, RateLimited
from traffic.imaging import crop_jpeg
from traffic.llm_assessor import LLMAssessor
from traffic.models import Detection, GroupContext, RiskLevel
from traffic.settings import GroupingSettings, LLMSettings, RiskThresholds
from traffic.vision_client import VisionClient

KEY = "sk-test-assessor-0001"


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(SimConfig(keys={KEY: SimKey(key_id="k1")})) as simulator:
        yield simulator


@pytest.fixture
def assessor(sim: ProviderSimulator) -> Iterator[LLMAssessor]:
    with VisionClient(sim.base_url, "qwen-vl-plus", timeout_s=5) as client:
        yield LLMAssessor(client, LLMSettings(), RiskThresholds())


def _context() -> tuple[GroupContext, bytes]:
    dets = [Detection("car", 0.9, (100, 100, 220, 180)), Detection("person", 0.8, (200, 110, 230, 200))]
    analysis = analyse_detections(dets, (640, 360), GroupingSettings())
    image = np.full((360, 640, 3), 90, dtype=np.uint8)
    group = analysis.groups[0]
    return analysis.context(group), crop_jpeg(image, group.bbox)


def test_a_valid_reply_becomes_a_verdict(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    context, crop = _context()
    verdict = assessor.assess(context, crop, api_key=KEY, key_id="k1")
    assert verdict.ok and verdict.group_index == 1 and verdict.key_id == "k1"
    assert isinstance(verdict.risk_level, RiskLevel)
    assert set(verdict.trigger_object_ids) <= {0, 1}
    assert verdict.usage.total_tokens > 0 and verdict.model == "qwen-vl-plus"
    body = sim.last_request()
    assert body is not None
    image_part = body["messages"][1]["content"][0]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_one_repair_turn_rescues_prose(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    sim.script("not_json", 200)
    context, crop = _context()
    verdict = assessor.assess(context, crop, api_key=KEY)
    assert verdict.ok
    repair = sim.last_request()
    assert repair is not None and [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert sim.stats()["total"] == 2


def test_two_bad_replies_are_a_bad_model_reply(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    sim.script("not_json", "not_json")
    with pytest.raises(BadModelReply):
        assessor.assess(*_context(), api_key=KEY)


@pytest.mark.parametrize("variant", ["no_verdict", "truncated"])
def test_a_reply_that_judges_nothing_gets_a_repair_turn(
    assessor: LLMAssessor, sim: ProviderSimulator, variant: str
) -> None:
    sim.script(variant, 200)
    verdict = assessor.assess(*_context(), api_key=KEY)
    assert verdict.ok and sim.stats()["total"] == 2


@pytest.mark.parametrize("variant", ["no_verdict", "truncated"])
def test_a_reply_that_judges_nothing_twice_is_a_bad_model_reply_not_safe(
    assessor: LLMAssessor, sim: ProviderSimulator, variant: str
) -> None:
    sim.script(variant, variant)
    with pytest.raises(BadModelReply, match="no risk level and no confidence"):
        assessor.assess(*_context(), api_key=KEY)


def test_provider_errors_propagate_typed(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    sim.script(429)
    with pytest.raises(RateLimited):
        assessor.assess(*_context(), api_key=KEY)
    with pytest.raises(KeyRejected):
        assessor.assess(*_context(), api_key="sk-not-a-known-key-123")


def test_the_repair_turn_asks_for_its_own_key(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    sim.script("not_json", 200)
    granted: list[str] = []

    def grant() -> str | None:
        granted.append(KEY)
        return KEY

    assert assessor.assess(*_context(), api_key=KEY, repair_key=grant).ok
    assert granted == [KEY]


def test_no_repair_when_no_key_is_granted(assessor: LLMAssessor, sim: ProviderSimulator) -> None:
    sim.script("not_json", 200)
    with pytest.raises(BadModelReply):
        assessor.assess(*_context(), api_key=KEY, repair_key=lambda: None)
    assert sim.stats()["total"] == 1, "the ungranted repair call was never made"
