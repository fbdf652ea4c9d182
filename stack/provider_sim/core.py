"""SimulatorCore: the simulator's state and the chat handler tying limits, faults and verdicts together."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from stack.provider_sim.config import SimAccount, SimConfig, SimKey, mask
from stack.provider_sim.faults import (
    Reply,
    ScriptStep,
    completion_reply,
    error_reply,
    json_reply,
    status_reply,
    throttle_reply,
    timeout_reply,
)
from stack.provider_sim.limits import Counts, Window, check_limits
from stack.provider_sim.verdicts import image_tokens, make_verdict, request_parts

log = logging.getLogger(__name__)


class SimulatorCore:
    """The simulator's decisions and counters, independent of HTTP; thread-safe."""

    def __init__(self, config: SimConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._reset_locked()

    @property
    def config(self) -> SimConfig:
        """The current configuration."""
        return self._config

    def _reset_locked(self) -> None:
        """Counters, windows, recordings, randomness and script back to the config's start."""
        cfg = self._config
        self._rng = random.Random(cfg.seed)
        self._script: deque[ScriptStep] = deque(cfg.status_script)
        self._key_windows: dict[str, tuple[Window, Window]] = {}
        self._account_windows: dict[str, tuple[Window, Window]] = {}
        self._total = 0
        self._accepted = 0
        self._over_limit = 0
        self._timeouts = 0
        self._by_status: Counter[str] = Counter()
        self._over_reason: Counter[str] = Counter()
        self._keys: dict[str, Counts] = {}
        self._accounts: dict[str, Counts] = {}
        self._recorded: deque[dict[str, Any]] = deque(maxlen=max(0, cfg.record_requests))
        self._in_flight = 0
        self._max_in_flight = 0
        self._started = time.monotonic()

    # --- control -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear counters, limit windows and recordings; restart the random stream and the script."""
        with self._lock:
            self._reset_locked()

    def update(self, changes: Mapping[str, Any]) -> SimConfig:
        """Apply config changes (JSON-like); a new ``status_script`` replaces the pending one."""
        with self._lock:
            self._config = self._config.updated(changes)
            if "status_script" in changes:
                self._script = deque(self._config.status_script)
            if "record_requests" in changes:
                self._recorded = deque(self._recorded, maxlen=max(0, self._config.record_requests))
            return self._config

    def script(self, *steps: ScriptStep) -> None:
        """Replace the pending scripted replies."""
        self.update({"status_script": steps})

    def set_key(self, api_key: str, spec: SimKey | None = None) -> None:
        """Add or replace a key."""
        with self._lock:
            keys = dict(self._config.keys)
            keys[api_key] = spec or SimKey()
            self._config = dataclasses.replace(self._config, keys=keys)

    def remove_key(self, api_key: str) -> None:
        """Forget a key: it is answered as unknown from now on."""
        with self._lock:
            keys = {k: v for k, v in self._config.keys.items() if k != api_key}
            self._config = dataclasses.replace(self._config, keys=keys)

    def set_account(self, account: str, spec: SimAccount) -> None:
        """Add or replace an account's limits."""
        with self._lock:
            accounts = dict(self._config.accounts)
            accounts[account] = spec
            self._config = dataclasses.replace(self._config, accounts=accounts)

    def reject_key(self, api_key: str) -> None:
        """Answer this key 401 ``InvalidApiKey`` from now on."""
        self._mark(api_key, rejected=True, arrears=False)

    def arrears_key(self, api_key: str) -> None:
        """Answer this key 400 ``Arrearage`` from now on."""
        self._mark(api_key, rejected=False, arrears=True)

    def restore_key(self, api_key: str) -> None:
        """Undo ``reject_key`` / ``arrears_key``."""
        self._mark(api_key, rejected=False, arrears=False)

    def _mark(self, api_key: str, *, rejected: bool, arrears: bool) -> None:
        with self._lock:
            cfg = self._config
            rej = cfg.rejected_keys | {api_key} if rejected else cfg.rejected_keys - {api_key}
            arr = cfg.arrears_keys | {api_key} if arrears else cfg.arrears_keys - {api_key}
            self._config = dataclasses.replace(cfg, rejected_keys=rej, arrears_keys=arr)

    def control(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run one ``POST /_control`` command ``{"action": ..., ...}``; raises ValueError if invalid."""
        action = command.get("action")
        if action == "reset":
            self.reset()
        elif action == "update":
            config = command.get("config")
            if not isinstance(config, Mapping):
                raise ValueError("update needs a config object")
            self.update(config)
        elif action == "script":
            self.script(*command.get("steps", ()))
        elif action == "set_key":
            fields = {k: v for k, v in command.items() if k not in ("action", "key")}
            self.set_key(_required_key(command), SimKey(**fields))
        elif action == "set_account":
            fields = {k: v for k, v in command.items() if k not in ("action", "account")}
            self.set_account(str(command["account"]), SimAccount(**fields))
        elif action in ("remove_key", "reject_key", "arrears_key", "restore_key"):
            getattr(self, action)(_required_key(command))
        else:
            raise ValueError(f"unknown control action {action!r}")
        return {"ok": True, "action": action}

    # --- inspection ----------------------------------------------------------------------------

    def label(self, api_key: str) -> str:
        """The stats/log label of ``api_key``."""
        spec = self._config.keys.get(api_key)
        return spec.key_id if spec is not None and spec.key_id else mask(api_key)

    def stats(self) -> dict[str, Any]:
        """JSON-ready counters (no secrets)."""
        with self._lock:
            return {
                "total": self._total,
                "accepted": self._accepted,
                "over_limit": self._over_limit,
                "over_limit_by_reason": dict(self._over_reason),
                "timeouts": self._timeouts,
                "by_status": dict(self._by_status),
                "keys": {label: c.as_dict() for label, c in self._keys.items()},
                "accounts": {account: c.as_dict() for account, c in self._accounts.items()},
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "pending_script": len(self._script),
                "uptime_s": round(time.monotonic() - self._started, 3),
            }

    def recorded(self) -> list[dict[str, Any]]:
        """Recent requests, oldest first: ``{path, key, body}`` with the key as its label."""
        with self._lock:
            return list(self._recorded)

    def last_request(self) -> dict[str, Any] | None:
        """The JSON body of the latest chat request, or None."""
        with self._lock:
            return self._recorded[-1]["body"] if self._recorded else None

    # --- requests ------------------------------------------------------------------------------

    def enter(self) -> None:
        """Count a chat request as in flight."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        """Count a chat request as finished."""
        with self._lock:
            self._in_flight -= 1

    def handle_chat(self, path: str, authorization: str | None, raw_body: bytes) -> Reply:
        """Decide the reply to one chat-completions request."""
        low, high = self._config.arrival_jitter_ms
        if high > 0:
            with self._lock:
                transit = self._rng.uniform(low, high)
            time.sleep(transit / 1000.0)  # the request reaches "the provider" this much later
        arrival = time.monotonic()
        api_key = _bearer(authorization)
        try:
            body: Any = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        with self._lock:
            cfg = self._config
            self._total += 1
            request_id = f"sim-{self._total:08d}"
            step = self._script.popleft() if self._script else None
            label = self._known_label(api_key)
            self._recorded.append({"path": path, "key": label, "body": body})
            if step is not None and step != 200:
                reply = self._scripted(step, request_id, body)
                return self._count(reply, label, None)
            if api_key is None:
                reply = error_reply(401, "InvalidApiKey", "No API-key provided.", request_id)
                return self._count(reply, label, None)
            echo = f": {api_key}" if cfg.echo_key_in_errors else "."
            if api_key in cfg.rejected_keys:
                native = {
                    "code": "InvalidApiKey",
                    "message": f"Invalid API-key provided{echo}",
                    "request_id": request_id,
                }
                return self._count(json_reply(401, native, **{"x-request-id": request_id}), label, None)
            if api_key in cfg.arrears_keys:
                message = f"Access denied, please make sure your account is in good standing{echo}"
                return self._count(error_reply(400, "Arrearage", message, request_id), label, None)
            spec = cfg.keys.get(api_key)
            if spec is None and not cfg.open_mode:
                message = f"Incorrect API key provided{echo}"
                return self._count(error_reply(401, "invalid_api_key", message, request_id), label, None)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                message = "Request body must be a JSON object with messages."
                return self._count(error_reply(400, "InvalidParameter", message, request_id), label, None)
            account = spec.account if spec is not None else "open"
            image, text = request_parts(body)
            prompt_tokens = image_tokens(image) + max(1, len(text) // 3)
            tokens = prompt_tokens + cfg.completion_tokens
            throttled = check_limits(
                cfg, self._key_windows, self._account_windows, api_key, spec, account, arrival, tokens
            )
            if throttled is not None:
                reason, wait = throttled
                self._over_limit += 1
                self._over_reason[reason] += 1
                self._counts(self._keys, label).over_limit += 1
                self._counts(self._accounts, account).over_limit += 1
                log.debug("429 %s key=%s account=%s retry in %.2fs", reason, label, account, wait)
                reply = throttle_reply(reason, wait, request_id, cfg.retry_after_style)
                return self._count(reply, label, account)
            self._accepted += 1
            self._counts(self._keys, label).accepted += 1
            acct = self._counts(self._accounts, account)
            acct.accepted += 1
            acct.tokens += tokens
            delay = (cfg.latency_ms + self._rng.uniform(0.0, cfg.jitter_ms)) / 1000.0
            roll = self._rng.random()
            if roll < cfg.timeout_rate:
                self._timeouts += 1
                reply = timeout_reply(request_id, cfg.hang_s)
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx:
                status = self._rng.choice((500, 503))
                reply = self._scripted(status, request_id, body)
                reply.delay_s = delay
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx + cfg.malformed_rate:
                variant = self._rng.choice(cfg.malformed_variants)
                reply = self._completion(cfg, body, image, text, prompt_tokens, request_id, variant)
                reply.delay_s = delay
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx + cfg.malformed_rate + cfg.throttle_rate:
                reply = throttle_reply("injected", 1.0, request_id, cfg.retry_after_style)
                reply.delay_s = delay
            else:
                reply = self._completion(cfg, body, image, text, prompt_tokens, request_id, None)
                reply.delay_s = delay
            return self._count(reply, label, account)

    def _known_label(self, api_key: str | None) -> str:
        """Stats label: configured or open-mode keys by label, anything else lumped as ``<unknown>``."""
        cfg = self._config
        if api_key is None:
            return "<none>"
        if api_key in cfg.keys or api_key in cfg.rejected_keys or api_key in cfg.arrears_keys or cfg.open_mode:
            return self.label(api_key)
        return "<unknown>"

    def _count(self, reply: Reply, label: str, account: str | None) -> Reply:
        """Record ``reply``'s status against the totals, the key and the account."""
        status = str(reply.status)
        self._by_status[status] += 1
        key_counts = self._counts(self._keys, label)
        key_counts.requests += 1
        key_counts.by_status[status] += 1
        if account is not None:
            acct = self._counts(self._accounts, account)
            acct.requests += 1
            acct.by_status[status] += 1
        return reply

    @staticmethod
    def _counts(table: dict[str, Counts], name: str) -> Counts:
        counts = table.get(name)
        if counts is None:
            counts = table[name] = Counts()
        return counts

    def _scripted(self, step: ScriptStep, request_id: str, body: Any) -> Reply:
        """The reply for a scripted step or an injected 5xx."""
        cfg = self._config
        if step == "timeout":
            self._timeouts += 1
            return timeout_reply(request_id, cfg.hang_s)
        if isinstance(step, str):
            image, text = request_parts(body) if isinstance(body, dict) else (b"", "")
            return self._completion(cfg, body, image, text, image_tokens(image), request_id, step)
        return status_reply(step, request_id, cfg.retry_after_style)

    def _completion(
        self,
        cfg: SimConfig,
        body: Any,
        image: bytes,
        text: str,
        prompt_tokens: int,
        request_id: str,
        variant: str | None,
    ) -> Reply:
        """A 2xx chat completion: a verdict, or the named malformed variant."""
        verdict = make_verdict(image or text.encode("utf-8"), cfg)
        return completion_reply(
            verdict,
            variant,
            body=body,
            default_model=cfg.model,
            reply_model=cfg.reply_model,
            content_parts=cfg.content_parts,
            prompt_tokens=prompt_tokens,
            completion_tokens=cfg.completion_tokens,
            request_id=request_id,
        )


def _required_key(command: Mapping[str, Any]) -> str:
    key = command.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("this action needs a key")
    return key


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
