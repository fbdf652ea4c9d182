"""A local OpenAI/DashScope-compatible vision provider for tests and benchmarks (not product code)."""

from __future__ import annotations

from stack.provider_sim.cli import main
from stack.provider_sim.config import (
    DEFAULT_LEVEL_WEIGHTS,
    DEFAULT_RISK_TYPES,
    LEVELS,
    SimAccount,
    SimConfig,
    SimKey,
    mask,
)
from stack.provider_sim.core import SimulatorCore
from stack.provider_sim.faults import MALFORMED_VARIANTS, RETRY_AFTER_STYLES, ScriptStep
from stack.provider_sim.server import CHAT_PATHS, MAX_BODY_BYTES, ProviderSimulator
from stack.provider_sim.verdicts import jpeg_size, make_verdict

__all__ = [
    "CHAT_PATHS",
    "DEFAULT_LEVEL_WEIGHTS",
    "DEFAULT_RISK_TYPES",
    "LEVELS",
    "MALFORMED_VARIANTS",
    "MAX_BODY_BYTES",
    "RETRY_AFTER_STYLES",
    "ProviderSimulator",
    "ScriptStep",
    "SimAccount",
    "SimConfig",
    "SimKey",
    "SimulatorCore",
    "jpeg_size",
    "main",
    "make_verdict",
    "mask",
]
