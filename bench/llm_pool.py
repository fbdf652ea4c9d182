"""LLM stage under a backlog: the cluster-wide key pool against per-key and per-account provider limits.

Self-contained: starts its own redis-server, the provider simulator (its own process; it enforces the
same per-key and per-account sliding-window limits as the pool is configured with and counts every
request over any of them) and several ``celery -A workers worker -Q llm`` processes. A backlog of real
``assess_group`` tasks over stored frames and crops (the bus photo, four groups) is queued at once and
drained. Throughput = accepted provider calls per second over the measured window (after warm-up);
capacity = min(Σ key limits, Σ account limits). Lost = tasks sent − verdicts stored.

Scenarios: ``keys10`` (10 keys × 5 qps, no account limit: 50/s) and ``accounts2`` (the same keys in
two accounts of 1200 rpm: 40/s). The ``keys10`` scenario runs on both worker pools, eventlet and
threads, at the same concurrency; the others on ``--pool`` (default: threads — eventlet fetches a
prefetch-worth of tasks only every ~2 s, so it needs a far higher ``-c`` to keep up, and its
cooperative sends stall behind other greenlets: 60-110 ms tails against 15-45 ms with threads).

    python -m bench.llm_pool [--quick] [--pool threads|eventlet] [--workers 3] [--concurrency 64]

Last line: ``throughput_ratio=… over_limit=… lost=…`` (worst ratio and sums over the ``--pool`` runs).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.common import finish
from infra import celery_names
from infra.frame_store import FrameStore
from stack.harness import bus_jpeg
from stack.processes import ProcessGroup, celery_worker
from stack.redis_server import LocalRedis
from traffic import redis_keys
from traffic.analysis import analyse_detections
from traffic.frame_record import FrameRecord
from traffic.imaging import crop_jpeg, decode_jpeg, image_size
from traffic.models import Detection
from traffic.settings import GroupingSettings, KeyPoolSettings

POOLS = ("threads", "eventlet")
DEFAULT_POOL = "threads"
LATENCY_MS = 300.0
JITTER_MS = 300.0
"""Simulated provider latency: uniform in [300, 600] ms."""
DRAIN_TIMEOUT_S = 40.0
DEFAULT_MARGIN_MS = KeyPoolSettings().window_margin_ms
NETWORK_JITTER_MS = (1.0, 20.0)
"""Transit from a worker to the provider: each request reaches the simulator's limit windows a uniform
1-20 ms after it was sent, so requests granted in order can arrive out of it, as over a real network.
The simulator runs at normal priority with Python's default GIL switch interval: nothing flatters it."""
LOG_DIR: Path | None = None
"""Where worker logs are kept (``--logs``); None: a temporary folder."""


@dataclass(frozen=True)
class BenchKey:
    """One API key of a scenario."""

    key_id: str
    secret: str
    qps: float
    account: str | None = None


@dataclass(frozen=True)
class Scenario:
    """Keys and accounts with their limits."""

    name: str
    keys: tuple[BenchKey, ...]
    accounts: dict[str, int]
    """Account id → requests per minute."""

    @property
    def capacity(self) -> float:
        """Calls per second the limits allow: min of the keys' sum and the accounts' sum."""
        key_sum = sum(k.qps for k in self.keys)
        per_account = [
            min(rpm / 60.0, sum(k.qps for k in self.keys if k.account == a)) for a, rpm in self.accounts.items()
        ]
        free = sum(k.qps for k in self.keys if k.account not in self.accounts)
        return min(key_sum, free + sum(per_account)) if self.accounts else key_sum


def scenarios() -> dict[str, Scenario]:
    """The two scenarios of the issue."""
    plain = tuple(BenchKey(f"key-{i:02d}", f"sk-bench-{uuid.uuid4().hex}", 5.0) for i in range(1, 11))
    split = tuple(BenchKey(k.key_id, k.secret, k.qps, "acct-a" if i < 5 else "acct-b") for i, k in enumerate(plain))
    return {
        "keys10": Scenario("keys10", plain, {}),
        "accounts2": Scenario("accounts2", split, {"acct-a": 1200, "acct-b": 1200}),
    }


@dataclass(frozen=True)
class Result:
    """Figures of one run."""

    scenario: str
    pool: str
    capacity: float
    rate: float
    over_limit: int
    sent: int
    verdicts: int
    fallbacks: int
    errors: int
    throttled: int
    """429s the provider answered (each one is also counted in over_limit)."""

    @property
    def ratio(self) -> float:
        """Achieved over configured capacity."""
        return self.rate / self.capacity

    @property
    def lost(self) -> int:
        """Tasks without a verdict."""
        return self.sent - self.verdicts

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"{self.scenario:<9} pool={self.pool:<8} {self.rate:6.2f}/s of {self.capacity:.0f}/s "
            f"ratio={self.ratio:.3f} over_limit={self.over_limit} 429s={self.throttled} lost={self.lost} "
            f"(sent={self.sent} verdicts={self.verdicts} fallbacks={self.fallbacks} errors={self.errors})"
        )


# --------------------------------------------------------------------------- the stack of one run


@contextmanager
def simulator(scenario: Scenario, tmp: Path) -> Iterator[str]:
    """The provider simulator as its own process (its clock is not slowed by this one); yields its URL."""
    config = {
        "keys": {
            k.secret: {"key_id": k.key_id, "account": k.account or "default", "qps_limit": k.qps} for k in scenario.keys
        },
        "accounts": {a: {"rpm_limit": rpm} for a, rpm in scenario.accounts.items()},
        "latency_ms": LATENCY_MS,
        "jitter_ms": JITTER_MS,
        "arrival_jitter_ms": list(NETWORK_JITTER_MS),
        "record_requests": 0,
    }
    path = tmp / "sim.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack.provider_sim", "--port", "0", "--config", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"provider simulator did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)


def sim_stats(base_url: str) -> dict[str, Any]:
    """``GET /stats`` of the simulator."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5) as reply:
        data: dict[str, Any] = json.load(reply)
        return data


def keys_yaml(scenario: Scenario) -> str:
    """The ``api_keys.yaml`` of a scenario (the same limits as the simulator's)."""
    lines = ["strategy: least_loaded"]
    if scenario.accounts:
        lines.append("accounts:")
        lines += [f"  - id: {a}\n    rpm_limit: {rpm}" for a, rpm in scenario.accounts.items()]
    lines.append("keys:")
    for k in scenario.keys:
        lines.append(f"  - key_id: {k.key_id}\n    api_key: {k.secret}\n    qps_limit: {k.qps:g}")
        if k.account:
            lines.append(f"    account: {k.account}")
    return "\n".join(lines) + "\n"


def store_frames(client: redis.Redis, count: int, deadline: float) -> list[tuple[str, tuple[int, ...]]]:
    """``count`` frames of the bus photo with four fake groups each, stored as the detector stores them."""
    jpeg = bus_jpeg()
    image = decode_jpeg(jpeg)
    width, height = image_size(image)
    spots = [(120, 420), (560, 420), (120, 860), (560, 860)]
    detections = [
        Detection("person", 0.8, (x + dx, y + dy, x + dx + 90, y + dy + 200))
        for x, y in spots
        for dx, dy in ((0, 0), (60, 20))
    ]
    analysis = analyse_detections(detections, (width, height), GroupingSettings())
    crops = {g.index: crop_jpeg(image, g.bbox) for g in analysis.groups}
    store = FrameStore(client)
    frames = []
    for i in range(count):
        frame_id = f"bench-{i:05d}-{uuid.uuid4().hex[:6]}"
        indices = tuple(crops)
        record = FrameRecord(
            frame_id, "bench", "bench", time.time(), deadline, analysis, "bench", ("person",), 0.0, assess=indices
        )
        store.save(record, crops, ())
        frames.append((frame_id, indices))
    return frames


def verdict_counts(client: redis.Redis, frames: list[tuple[str, tuple[int, ...]]]) -> tuple[int, int, int]:
    """(verdicts, fallbacks, errors) stored so far."""
    pipe = client.pipeline(transaction=False)
    for frame_id, _ in frames:
        pipe.hvals(redis_keys.frame_verdicts(frame_id))
    found = fallbacks = errors = 0
    for values in pipe.execute():
        for raw in values:
            found += 1
            verdict = json.loads(raw)
            error = verdict.get("error") or ""
            fallbacks += error.startswith("fallback:")
            errors += bool(error) and not error.startswith("fallback:")
    return found, fallbacks, errors


def wait_for_workers(app: Celery, names: list[str], timeout: float) -> None:
    """Block until every named worker answers a ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        if set(names) <= {name.split("@")[0] for reply in replies for name in reply}:
            return
    raise RuntimeError(f"workers {names} did not answer within {timeout:.0f} s")


def run_once(
    scenario: Scenario,
    pool: str,
    *,
    workers: int,
    concurrency: int,
    warmup_s: float,
    measure_s: float,
    margin_ms: float = DEFAULT_MARGIN_MS,
) -> Result:
    """Queue a backlog, start the workers, measure the drain; everything is stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-llm-pool-") as name:
        tmp = Path(name)
        with LocalRedis(tmp / "redis") as server, simulator(scenario, tmp) as base_url:
            client = redis.Redis.from_url(server.url)
            (tmp / "api_keys.yaml").write_text(keys_yaml(scenario))
            env = {
                "REDIS_URL": server.url,
                "TRAFFIC_LLM_BASE_URL": base_url,
                "TRAFFIC_API_KEYS_FILE": str(tmp / "api_keys.yaml"),
                "TRAFFIC_LOG_LEVEL": "WARNING",
                "TRAFFIC_KEY_WINDOW_MARGIN": str(margin_ms),
            }
            tasks = math.ceil(scenario.capacity * (warmup_s + measure_s + 4.0))
            frames = store_frames(client, math.ceil(tasks / 4), time.time() + 900)
            app = Celery("bench", broker=server.url, backend=server.url)
            app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
            sent = 0
            for frame_id, indices in frames:
                for index in indices:
                    app.send_task(
                        celery_names.ASSESS_GROUP,
                        args=["bench", frame_id, index, time.time() + 900],
                        queue=celery_names.LLM_QUEUE,
                    )
                    sent += 1
            group = ProcessGroup(LOG_DIR or tmp / "logs", env)
            names = [f"llm{i}" for i in range(1, workers + 1)]
            try:
                for worker in names:
                    group.start(celery_worker(worker, celery_names.LLM_QUEUE, pool, concurrency))
                wait_for_workers(app, names, 60)
                rate = _measure(base_url, warmup_s, measure_s)
                found = _drain(client, frames, sent)
            except BaseException:
                for worker in names:
                    print(group.tail(worker, 20), file=sys.stderr)
                raise
            finally:
                group.stop_all()
            stats = sim_stats(base_url)
            client.close()
    verdicts, fallbacks, errors = found
    return Result(
        scenario.name,
        pool,
        scenario.capacity,
        rate,
        int(stats["over_limit"]),
        sent,
        verdicts,
        fallbacks,
        errors,
        int(stats["by_status"].get("429", 0)),
    )


def _measure(base_url: str, warmup_s: float, measure_s: float) -> float:
    """Accepted calls per second from ``warmup_s`` after the first accepted call, for ``measure_s``."""
    deadline = time.monotonic() + 60
    while sim_stats(base_url)["accepted"] == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("no provider call was accepted within 60 s")
        time.sleep(0.05)
    time.sleep(warmup_s)
    start, first = time.monotonic(), sim_stats(base_url)["accepted"]
    time.sleep(measure_s)
    end, last = time.monotonic(), sim_stats(base_url)["accepted"]
    return float(last - first) / (end - start)


def _drain(client: redis.Redis, frames: list[tuple[str, tuple[int, ...]]], sent: int) -> tuple[int, int, int]:
    """Wait until every task left a verdict (or the drain times out); the final counts."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    counts = verdict_counts(client, frames)
    while counts[0] < sent and time.monotonic() < deadline:
        time.sleep(0.5)
        counts = verdict_counts(client, frames)
    return counts


# --------------------------------------------------------------------------- command line


def main() -> None:
    """Compare the pools on ``keys10``, run the other scenario on ``--pool``, print the closing line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (about two minutes in all)")
    parser.add_argument("--pool", choices=POOLS, default=DEFAULT_POOL, help="pool of the llm workers")
    parser.add_argument("--workers", type=int, default=3, help="llm worker processes")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks in flight per worker process")
    parser.add_argument("--measure", type=float, help="measured seconds per run")
    parser.add_argument(
        "--margin-ms",
        type=float,
        default=DEFAULT_MARGIN_MS,
        help="the pool's window margin (TRAFFIC_KEY_WINDOW_MARGIN)",
    )
    args = parser.parse_args()
    measure = args.measure or (15.0 if args.quick else 60.0)
    compare = args.measure or (15.0 if args.quick else 20.0)
    warmup = 3.0
    all_scenarios = scenarios()
    print(f"{args.workers} llm workers x {args.concurrency}; provider latency {LATENCY_MS:.0f}+U(0,{JITTER_MS:.0f}) ms")
    low, high = NETWORK_JITTER_MS
    print(
        f"applied: network jitter U({low:g},{high:g}) ms before the provider's limit windows; "
        f"pool window margin {args.margin_ms:g} ms (+1/200 of each span); windows count calls from their "
        "send stamp; no priority or GIL changes"
    )
    results: list[Result] = []
    for pool in (args.pool, *[p for p in POOLS if p != args.pool]):
        window = measure if (pool == args.pool and args.quick) else compare
        result = run_once(
            all_scenarios["keys10"],
            pool,
            workers=args.workers,
            concurrency=args.concurrency,
            warmup_s=warmup,
            measure_s=window,
            margin_ms=args.margin_ms,
        )
        print(result.line(), flush=True)
        results.append(result)
    chosen = [r for r in results if r.pool == args.pool and args.quick]
    names = ["accounts2"] if args.quick else ["keys10", "accounts2"]
    for name in names:
        result = run_once(
            all_scenarios[name],
            args.pool,
            workers=args.workers,
            concurrency=args.concurrency,
            warmup_s=warmup,
            measure_s=measure,
            margin_ms=args.margin_ms,
        )
        print(result.line(), flush=True)
        chosen.append(result)
    by_pool = {r.pool: r.ratio for r in results}
    pairs: dict[str, object] = {
        "throughput_ratio": round(min(r.ratio for r in chosen), 3),
        "over_limit": sum(r.over_limit for r in chosen),
        "lost": sum(r.lost for r in chosen),
        "pool": args.pool,
        "margin_ms": args.margin_ms,
        "network_jitter_ms": f"{NETWORK_JITTER_MS[0]:g}-{NETWORK_JITTER_MS[1]:g}",
    }
    pairs |= {f"{r.scenario}_ratio": round(r.ratio, 3) for r in chosen}
    pairs |= {f"{pool}_keys10_ratio": round(ratio, 3) for pool, ratio in by_pool.items()}
    pairs |= {f"{r.pool}_keys10_over_limit": r.over_limit for r in results}
    finish(pairs)


if __name__ == "__main__":
    main()
