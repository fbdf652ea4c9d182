"""Assess one traffic group with the vision model: prompt, call, parse (one repair turn), risk rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from traffic.errors import BadModelReply
from traffic.models import GroupContext, GroupVerdict, Usage
from traffic.prompts import build_group_prompt, build_repair_prompt
from traffic.reply_parser import parse_reply
from traffic.risk import verdict_from_reply
from traffic.settings import LLMSettings, RiskThresholds
from traffic.vision_client import VisionClient

log = logging.getLogger(__name__)


class LLMAssessor:
    """Turns a group crop into a verdict with one key; provider errors propagate, typed, to the caller."""

    def __init__(self, client: VisionClient, llm: LLMSettings, thresholds: RiskThresholds) -> None:
        self._client = client
        self._llm = llm
        self._thresholds = thresholds

    @property
    def model(self) -> str:
        """The provider model name this assessor asks."""
        return self._client.model

    def assess(
        self,
        context: GroupContext,
        crop_jpeg: bytes,
        *,
        api_key: str,
        key_id: str | None = None,
        timeout_s: float | None = None,
        repair_key: Callable[[], str | None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> GroupVerdict:
        """A verdict for ``context``; raises RateLimited/KeyRejected/ProviderUnavailable/BadModelReply.

        An unusable reply gets one repair turn. ``repair_key`` supplies the key for that second call
        (so a rate limiter can grant it like any other call); it returns None when no call may be made,
        and the reply then stays a ``BadModelReply``. Without it the repair reuses ``api_key``.
        ``on_sent`` runs each time a request is written (the key pool's send stamp).
        """
        prompt = build_group_prompt(context, language=self._llm.language)
        valid_ids = context.group.member_indices
        started = time.perf_counter()
        completion = self._client.complete(
            api_key,
            system=prompt.system,
            user=prompt.user,
            image_jpeg=crop_jpeg,
            timeout_s=timeout_s,
            on_sent=on_sent,
        )
        usage = completion.usage
        try:
            reply = parse_reply(completion.text, valid_object_ids=valid_ids)
        except BadModelReply as first:
            second_key = repair_key() if repair_key is not None else api_key
            if second_key is None:
                raise
            log.info("group %d: unusable reply, asking once more (%s)", context.group.index, first)
            repair = self._client.complete(
                second_key,
                system=prompt.system,
                user=prompt.user,
                image_jpeg=crop_jpeg,
                timeout_s=timeout_s,
                followup=(completion.text, build_repair_prompt(completion.text)),
                on_sent=on_sent,
            )
            usage = Usage(
                usage.prompt_tokens + repair.usage.prompt_tokens,
                usage.completion_tokens + repair.usage.completion_tokens,
            )
            reply = parse_reply(repair.text, valid_object_ids=valid_ids)
        return verdict_from_reply(
            context.group.index,
            reply,
            thresholds=self._thresholds,
            model=completion.model,
            latency_s=time.perf_counter() - started,
            usage=usage,
            key_id=key_id,
        )
