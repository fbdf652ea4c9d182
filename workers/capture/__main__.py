"""The capture service (``python -m workers.capture``): claims cameras, keeps their latest frame, samples it."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Sequence
from types import FrameType

import redis

from infra.camera_sources import quiet_native_logs
from infra.emitter import Emitter
from infra.runtime import bootstrap
from workers import app
from workers.capture.service import CaptureService

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m workers.capture``."""
    parser = argparse.ArgumentParser(prog="python -m workers.capture", description=__doc__.splitlines()[0])
    parser.add_argument("--owner-id", help="lease owner id (default: host:pid:random)")
    parser.add_argument("--once-for", type=float, metavar="SECONDS", help="run this long, then stop cleanly")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the capture service until SIGTERM/SIGINT (or ``--once-for`` seconds)."""
    args = build_parser().parse_args(argv)
    settings = bootstrap()
    quiet_native_logs()
    redis_url = settings.redis_url or str(app.conf.broker_url)  # the broker is this Redis too
    client = redis.Redis.from_url(redis_url, socket_timeout=10, health_check_interval=10)
    service = CaptureService(settings, client, Emitter(redis_url), send_task=app.send_task, owner_id=args.owner_id)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    deadline = None if args.once_for is None else time.monotonic() + args.once_for
    while not service.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            break
    service.close()
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
