"""The ``traffic`` command: run the stack, inspect settings, and operator tools."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from infra import celery_names
from infra.runtime import bootstrap
from stack.run_file import LocalStack, NoLocalStack, read_run_file
from traffic.cameras import mask_url
from traffic.config import describe_settings
from traffic.errors import ConfigError, TrafficError
from traffic.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_VAR_DIR = Path("var")


def _cmd_run(args: argparse.Namespace) -> int:
    """Start the whole stack (embedded Redis unless REDIS_URL answers, demo camera) until Ctrl-C."""
    from stack.supervisor import run_stack

    settings = bootstrap()
    return run_stack(settings, Path(args.var_dir), sys.stdout, simulated_model=args.simulated_model)


def _cmd_demo(args: argparse.Namespace) -> int:
    """One pass of detection, grouping and assessment over the demo images, printed."""
    from stack.demo_pass import run_demo_pass
    from stack.redis_server import resolve_redis

    settings = bootstrap()
    url, local = resolve_redis(settings.redis_url, Path(args.var_dir) / "redis", password=secrets.token_urlsafe(24))
    try:
        print(f"redis: {mask_url(url)}{' (embedded, started for this run)' if local else ''}", flush=True)
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


def _target(args: argparse.Namespace, settings: Settings) -> tuple[str, LocalStack | None]:
    """The Redis an operator command acts on: the configured one, else that of the stack ``traffic run``
    started from ``--var-dir`` (its run file); operator commands never start an embedded one."""
    if settings.redis_url:
        return settings.redis_url, None
    stack = read_run_file(Path(args.var_dir))
    return stack.redis_url, stack


def _redis_url(args: argparse.Namespace) -> str:
    """The Redis an operator command acts on (see ``_target``)."""
    return _target(args, bootstrap(configure_log=False))[0]


def _cmd_dlq(args: argparse.Namespace) -> int:
    """List or replay dead-lettered group assessments (or, with ``--webhooks``, webhook deliveries)."""
    import redis

    from infra.dead_letters import DeadLetters

    if args.webhooks:
        return _webhook_dlq(args)
    client = redis.Redis.from_url(_redis_url(args))
    letters = DeadLetters(client)
    entries = letters.list()
    if args.action == "list":
        for entry in entries:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
        print(f"{len(entries)} dead letter(s)", file=sys.stderr)
        return 0
    chosen = entries if args.all else [e for e in entries if e.entry_id in set(args.ids)]
    if not chosen:
        print("nothing to replay (give entry ids or --all)", file=sys.stderr)
        return 1
    from workers import app

    for entry in chosen:
        taken = letters.take(entry.entry_id)
        if taken is None:
            continue
        app.send_task(celery_names.REPLAY_DEAD_LETTER, args=[taken.to_json()], queue=celery_names.LLM_QUEUE)
        print(f"replaying {taken.entry_id} (frame {taken.frame_id}, group {taken.group_index})")
    return 0


def _webhook_dlq(args: argparse.Namespace) -> int:
    """List webhook deliveries that failed for good, or deliver them again (from their first try, same id)."""
    import redis

    from workers import webhooks

    settings = bootstrap(configure_log=False)
    client = redis.Redis.from_url(_target(args, settings)[0])
    entries = webhooks.dead_letters(client)
    if args.action == "list":
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        print(f"{len(entries)} webhook dead letter(s)", file=sys.stderr)
        return 0
    chosen = [str(e["id"]) for e in entries if args.all or e["id"] in set(args.ids)]
    if not chosen:
        print("nothing to replay (give delivery ids or --all)", file=sys.stderr)
        return 1
    for delivery_id in chosen:
        if webhooks.replay(client, settings.webhooks, delivery_id):
            print(f"replaying webhook delivery {delivery_id}")
    return 0


def _cmd_cameras(args: argparse.Namespace) -> int:
    """List, add or remove cameras of the running stack."""
    import redis

    from infra.camera_registry import CameraRegistry
    from infra.host_resolver import resolve_host
    from traffic.cameras import make_camera
    from traffic.url_policy import UrlDenied, check_camera_url, policy_of

    settings = bootstrap(configure_log=False)
    url, stack = _target(args, settings)
    registry = CameraRegistry(redis.Redis.from_url(url))
    if args.action == "list":
        for camera in registry.list():
            status = registry.status(camera.camera_id) or {}
            print(json.dumps({**camera.public_json(), "status": status}, ensure_ascii=False))
        return 0
    if not args.id:
        print(f"cameras {args.action} needs a camera id", file=sys.stderr)
        return 2
    if args.action == "add":
        if not args.url:
            print("cameras add needs a camera id and a URL or file", file=sys.stderr)
            return 2
        capture = settings.capture
        if stack is not None:  # the stack's capture service opens the file: its rules apply
            capture = dataclasses.replace(
                capture, allow_file_sources=stack.allow_file_sources, media_dir=stack.media_dir
            )
        source = _absolute_if_path(args.url)
        try:
            checked = check_camera_url(source, policy_of(capture), resolve_host)
        except UrlDenied as exc:
            if exc.rule != "outside_media_dir" or not capture.media_dir:
                raise
            where = Path(capture.media_dir).resolve()
            raise UrlDenied(exc.rule, f"{exc} ({where}); copy the file there") from None
        camera = make_camera(
            args.id,
            checked,
            allow_files=capture.allow_file_sources,
            name=args.name or "",
            detect_fps=args.detect_fps,
        )
        added = registry.add(camera, limit=capture.max_cameras)
        print("added" if added else "updated", camera.camera_id)
        return 0
    if registry.remove(args.id):
        print("removed", args.id)
        return 0
    print(f"no camera {args.id!r}", file=sys.stderr)
    return 1


def _absolute_if_path(source: str) -> str:
    """A bare relative path made absolute (the capture service runs elsewhere); URLs unchanged."""
    if "://" in source or source.startswith("file:") or os.path.isabs(source):
        return source
    return os.path.abspath(source)


def _cmd_keys(args: argparse.Namespace) -> int:
    """The API key pool: status, verify, disable, enable (run time, every worker at once)."""
    import redis

    from stack.keys_cli import disable_key, enable_key, print_status, print_view, stack_view, verify_keys

    settings = bootstrap(configure_log=False)
    url, stack = _target(args, settings)
    # With the stack's keys in its environment, not this terminal's, its web server tells what it has.
    view = stack_view(stack.web_url, settings.server.auth_token) if stack and not settings.keys.keys else None
    if args.action == "status" and view is not None:
        return print_view(view, sys.stdout, as_json=args.json)
    client = redis.Redis.from_url(url)
    if args.action == "status":
        return print_status(client, settings, sys.stdout, as_json=args.json)
    if args.action == "verify":
        if view is not None:
            print("keys verify calls the provider with each key: configure the same keys here", file=sys.stderr)
            return 2
        return verify_keys(client, settings, sys.stdout, only=args.key_ids, as_json=args.json)
    if len(args.key_ids) != 1:
        print(f"keys {args.action} needs exactly one key id", file=sys.stderr)
        return 2
    change = disable_key if args.action == "disable" else enable_key
    known = {str(k["keyId"]) for k in view["keys"]} if view is not None else None
    return change(client, settings, args.key_ids[0], sys.stdout, known=known)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="traffic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the stack on the embedded defaults (local Redis, demo input)")
    run.add_argument("--var-dir", default=str(DEFAULT_VAR_DIR), help="where local state lives (default: var/)")
    run.add_argument(
        "--simulated-model",
        action="store_true",
        help="use the local provider simulator as the vision model (made-up verdicts, labelled simulated)",
    )
    run.set_defaults(func=_cmd_run)
    demo = sub.add_parser("demo", help="detect, group and assess the demo images once and print the findings")
    demo.add_argument("--var-dir", default=str(DEFAULT_VAR_DIR), help="where local state lives (default: var/)")
    demo.set_defaults(func=_cmd_demo)
    # Operator commands act on REDIS_URL, else on the stack `traffic run` started from --var-dir.
    stack = argparse.ArgumentParser(add_help=False)
    stack.add_argument(
        "--var-dir",
        default=str(DEFAULT_VAR_DIR),
        help="without REDIS_URL: act on the stack `traffic run` started from this directory (default: var/)",
    )
    dlq = sub.add_parser("dlq", parents=[stack], help="dead-lettered group assessments and webhook deliveries")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("ids", nargs="*", help="entry ids (with --webhooks: delivery ids) to replay")
    dlq.add_argument("--all", action="store_true", help="replay every entry")
    dlq.add_argument(
        "--webhooks", action="store_true", help="webhook deliveries that failed for good (docs/WEBHOOKS.md)"
    )
    dlq.set_defaults(func=_cmd_dlq)
    cameras = sub.add_parser("cameras", parents=[stack], help="the stack's cameras")
    cameras.add_argument("action", choices=["list", "add", "remove"])
    cameras.add_argument("id", nargs="?", help="camera id (add, remove)")
    cameras.add_argument("url", nargs="?", help="rtsp://, http(s):// (or a file, if file sources are allowed)")
    cameras.add_argument("--name", help="display name")
    cameras.add_argument(
        "--detect-fps",
        type=float,
        help="add: frames detected and tracked per second (0.05-30; default: every TRAFFIC_FRAME_INTERVAL)",
    )
    cameras.set_defaults(func=_cmd_cameras)
    pool = sub.add_parser("keys", parents=[stack], help="the API key pool: status, verify, disable, enable")
    pool.add_argument("action", choices=["status", "verify", "disable", "enable"])
    pool.add_argument("key_ids", nargs="*", help="key id (disable, enable; verify: only these keys)")
    pool.add_argument("--json", action="store_true", help="print JSON instead of a table (status, verify)")
    pool.set_defaults(func=_cmd_keys)
    config = sub.add_parser("config", help="print the effective settings (secrets masked)")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``traffic`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NoLocalStack as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 2
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
