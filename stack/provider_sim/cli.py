"""The command line: ``python -m stack.provider_sim --port 0 --config sim.json`` prints ``READY <base_url>``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from stack.provider_sim.config import SimConfig
from stack.provider_sim.server import ProviderSimulator


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; prints ``READY <base_url>`` once listening."""
    parser = argparse.ArgumentParser(
        prog="python -m stack.provider_sim", description="Local OpenAI-compatible vision provider simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", help="JSON file with SimConfig fields")
    parser.add_argument("--open-mode", action="store_true", help="accept any API key")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    data: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            data = json.load(fh)
    if args.open_mode:
        data["open_mode"] = True
    try:
        config = SimConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        print(f"provider_sim: bad config: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ProviderSimulator(config, host=args.host, port=args.port) as sim:
        print(f"READY {sim.base_url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
