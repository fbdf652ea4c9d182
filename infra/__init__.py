"""Infrastructure every process shares: Redis stores, the key pool, the emitter, process start-up.

Layering: ``infra`` imports ``traffic`` and third-party libraries only; ``workers`` and ``web`` import
``infra`` and ``traffic`` and never each other; ``stack`` (local-run and test tooling) may import all.
"""
