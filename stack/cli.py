"""The ``traffic`` command: run the stack, inspect settings, and operator tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from stack.runtime import bootstrap
from traffic.config import describe_settings
from traffic.errors import ConfigError, TrafficError

log = logging.getLogger(__name__)

DEFAULT_VAR_DIR = Path("var")


def _cmd_run(args: argparse.Namespace) -> int:
    """Start Redis (embedded unless REDIS_URL answers) and run the demo pass."""
    from stack.demo_pass import run_demo_pass
    from stack.redis_server import resolve_redis

    settings = bootstrap()
    url, local = resolve_redis(settings.redis_url, Path(args.var_dir) / "redis")
    try:
        print(f"redis: {url}{' (embedded, started for this run)' if local else ''}", flush=True)
        run_demo_pass(settings, url, sys.stdout)
    finally:
        if local is not None:
            local.stop()
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings, secrets masked."""
    settings = bootstrap(configure_log=False)
    print(json.dumps(describe_settings(settings), indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="traffic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the stack on the embedded defaults (local Redis, demo input)")
    run.add_argument("--var-dir", default=str(DEFAULT_VAR_DIR), help="where local state lives (default: var/)")
    run.set_defaults(func=_cmd_run)
    config = sub.add_parser("config", help="print the effective settings (secrets masked)")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``traffic`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"traffic: configuration error: {exc}", file=sys.stderr)
        return 2
    except TrafficError as exc:
        print(f"traffic: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
