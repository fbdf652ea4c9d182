"""Incidents: a simulated day of 50 cameras written through the store, then a typical operator's filtered
page, on SQLite and on PostgreSQL, against a full-table scan of the same filter in the same run.

Self-contained: a SQLite file in a temporary directory and a private PostgreSQL cluster (Debian's
``postgresql``; left out, and said so, when it is not installed), both removed after.

- **Writes:** every incident as the flush job writes it, one transaction per alert event: ``new``, then
  its ``end`` (``IncidentStore.record``); the milliseconds of each ``new`` write are the insert figures.
- **Top-up:** more rows in bulk (not timed) up to the query size (100,000; ``--quick`` 10,000).
- **Query:** one camera, open, level medium or higher, first seen in the last 6 hours, newest first,
  a page of 50 (``IncidentStore.query``): the milliseconds of each, over random cameras and windows.
- **Full scan:** the same filter with the indexes kept out (SQLite ``NOT INDEXED``, PostgreSQL with index
  scans off), every column of the page read in the same order (the store also turns rows into incidents).

    python -m bench.incidents [--quick] [--no-postgres]

Last line: ``rows=… insert_p95_ms=… query_p95_ms=… scan_p95_ms=… query_speedup=…`` (SQLite), then the
same for PostgreSQL as ``pg_…``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, insert, text

from bench.common import finish, percentile, summary
from infra.incident_db import IncidentQuery, IncidentRow, IncidentStore, database_engine, migrate
from traffic.alerts import RULE_BASED, Alert, AlertEvent, AlertKind
from traffic.incidents import IncidentStatus, natural_key, sighting_of
from traffic.models import RiskLevel

CAMERAS = 50
DAY_S = 86_400.0
START = 1_764_547_200.0  # 2025-12-01T00:00:00Z
LEVELS = (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)
LEVEL_WEIGHTS = (0.5, 0.35, 0.15)
KINDS = (("model", ("jaywalking",)), ("near_miss", ("near_miss",)), ("wrong_way", ("wrong_way",)))
KIND_WEIGHTS = (0.8, 0.15, 0.05)
QUERIES = 200
WINDOW_S = 6 * 3600.0


def day_of_events(count: int, seed: int) -> list[tuple[AlertEvent, AlertEvent]]:
    """``count`` alert lives of 50 cameras over one day: each its ``new`` and ``end`` events, in time order."""
    rng = random.Random(seed)
    lives = []
    for k in range(count):
        first = START + rng.uniform(0, DAY_S)
        kind, types = rng.choices(KINDS, KIND_WEIGHTS)[0]
        level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
        alert = Alert(
            alert_id=f"cam-{k % CAMERAS}:{types[0]}:{rng.randrange(8)}x{rng.randrange(8)}",
            camera_id=f"cam-{rng.randrange(CAMERAS)}",
            level=level,
            risk_types=types,
            description="检测到风险：" + types[0],
            first_seen=first,
            last_seen=first,
            frame_id=f"f{k}",
            bbox=(10.0, 20.0, 200.0, 240.0),
            count=1,
            tracks=(rng.randrange(1000), rng.randrange(1000)),
            source=RULE_BASED if kind != "model" else "model",
            model="" if kind != "model" else "qwen-vl-plus",
        )
        end = Alert(**{**alert.__dict__, "last_seen": first + rng.uniform(2, 120), "frame_id": f"f{k}e"})
        lives.append((AlertEvent(AlertKind.NEW, alert), AlertEvent(AlertKind.END, end)))
    lives.sort(key=lambda pair: pair[0].alert.first_seen)
    return lives


def write_day(store: IncidentStore, lives: list[tuple[AlertEvent, AlertEvent]]) -> list[float]:
    """Write every life's events as the flush job does; the ms of each ``new`` write."""
    times = []
    for new, end in lives:
        started = time.perf_counter()
        store.record(sighting_of(new))
        times.append((time.perf_counter() - started) * 1000)
        store.record(sighting_of(end))
    return times


def top_up(engine: Engine, rows: int, seed: int) -> None:
    """Bulk-insert rows (untimed) until the table holds ``rows``; some acknowledged or resolved."""
    have = IncidentStore(engine).count()
    rng = random.Random(seed)
    batch: list[dict[str, object]] = []
    for k in range(have, rows):
        first = START + rng.uniform(0, DAY_S)
        level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
        status = rng.choices(list(IncidentStatus), (0.6, 0.2, 0.15, 0.05))[0]
        batch.append(
            {
                "natural_key": natural_key(f"bulk-{k}", first), "alert_id": f"bulk-{k}",
                "camera_id": f"cam-{rng.randrange(CAMERAS)}", "kind": "model", "level": level.value,
                "level_rank": level.rank, "risk_types": ["jaywalking"], "description": "d", "first_seen": first,
                "last_seen": first + 30, "ended_at": first + 30, "track_ids": [1, 2], "model": "qwen-vl-plus",
                "key_id": "k1", "frame_ids": [f"b{k}"], "status": status.value, "updated_at": first + 30,
            }
        )  # fmt: skip
        if len(batch) == 5000:
            _insert(engine, batch)
            batch = []
    if batch:
        _insert(engine, batch)


def _insert(engine: Engine, batch: list[dict[str, object]]) -> None:
    with engine.begin() as connection:
        connection.execute(insert(IncidentRow), batch)


def typical_queries(seed: int) -> list[IncidentQuery]:
    """An operator's filter: one camera, open, medium or worse, the last 6 hours of a random moment."""
    rng = random.Random(seed)
    queries = []
    for _ in range(QUERIES):
        until = START + rng.uniform(WINDOW_S, DAY_S)
        queries.append(
            IncidentQuery(
                camera_id=f"cam-{rng.randrange(CAMERAS)}", min_level=RiskLevel.MEDIUM, status=IncidentStatus.OPEN,
                since=until - WINDOW_S, until=until, limit=50,
            )
        )  # fmt: skip
    return queries


def time_queries(run: Callable[[IncidentQuery], int], queries: list[IncidentQuery]) -> tuple[list[float], int]:
    """Milliseconds of each query (after two warm-up runs), and the rows the pages held in all."""
    for query in queries[:2]:
        run(query)
    times, found = [], 0
    for query in queries:
        started = time.perf_counter()
        found += run(query)
        times.append((time.perf_counter() - started) * 1000)
    return times, found


SCAN_SQL = (
    "SELECT * FROM incidents{hint} WHERE camera_id = :camera AND status = 'open' AND level_rank >= :rank "
    "AND first_seen >= :since AND first_seen < :until ORDER BY first_seen DESC, id DESC LIMIT 50"
)


def scan(engine: Engine, postgres: bool) -> Callable[[IncidentQuery], int]:
    """The same filter read with no index (SQLite ``NOT INDEXED``; PostgreSQL with index scans off)."""
    sql = text(SCAN_SQL.format(hint="" if postgres else " NOT INDEXED"))

    def run(query: IncidentQuery) -> int:
        assert query.min_level is not None
        params = {"camera": query.camera_id, "rank": query.min_level.rank, "since": query.since, "until": query.until}
        with engine.begin() as connection:
            if postgres:
                connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
                connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
                connection.exec_driver_sql("SET LOCAL enable_indexonlyscan = off")
            return len(connection.execute(sql, params).all())

    return run


def measure(name: str, engine: Engine, lives: list[tuple[AlertEvent, AlertEvent]], rows: int) -> dict[str, float]:
    """Write the day, top up, query; print and return the figures."""
    migrate(engine)
    store = IncidentStore(engine)
    inserts = write_day(store, lives)
    print(summary(f"[{name}] write of a new incident ({len(lives)} lives, new + end each)", inserts))
    top_up(engine, rows, seed=11)
    count = store.count()
    queries = typical_queries(seed=5)
    indexed, found = time_queries(lambda q: len(store.query(q).incidents), queries)
    scanned, found_scan = time_queries(scan(engine, name == "postgresql"), queries)
    assert found == found_scan, f"the scan found {found_scan} rows, the store {found}"
    print(summary(f"[{name}] filtered page at {count} rows (camera, open, >= medium, 6 h, 50)", indexed))
    print(summary(f"[{name}]   the same filter, full-table scan", scanned))
    print(f"[{name}]   {found / len(queries):.1f} rows a page on average")
    return {
        "rows": count,
        "insert_p95_ms": percentile(inserts, 95),
        "query_p95_ms": percentile(indexed, 95),
        "scan_p95_ms": percentile(scanned, 95),
        "query_speedup": statistics.median(scanned) / statistics.median(indexed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.incidents", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="7,000 incidents written, 10,000 rows queried")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    lives = day_of_events(7_000 if args.quick else 70_000, seed=3)
    rows = 10_000 if args.quick else 100_000
    print(f"a day of {CAMERAS} cameras: {len(lives)} incidents, then {rows} rows in all for the queries")
    with tempfile.TemporaryDirectory(prefix="bench-incidents-") as tmp:
        engine = database_engine(f"sqlite:///{Path(tmp) / 'incidents.db'}")
        pairs: dict[str, object] = dict(measure("sqlite", engine, lives, rows))
        engine.dispose()
    if not args.no_postgres:
        from stack.postgres_server import LocalPostgres, PostgresUnavailable

        try:
            with LocalPostgres() as server:
                engine = database_engine(server.url)
                figures = measure("postgresql", engine, lives, rows)
                engine.dispose()
            pairs |= {f"pg_{k}": v for k, v in figures.items()}
        except PostgresUnavailable as exc:
            print(f"PostgreSQL left out: {exc}")
    finish(pairs)


if __name__ == "__main__":
    main()
