"""Incidents in a real database through SQLAlchemy 2 (the one module that imports it): SQLite file by
default, PostgreSQL in production; the schema is Alembic's (``infra/migrations``), never ``create_all``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from traffic.errors import TrafficError
from traffic.incidents import (
    Incident,
    IncidentAction,
    IncidentError,
    IncidentKind,
    IncidentSighting,
    IncidentStatus,
    OperatorAction,
    kept_frame_ids,
    next_status,
    worse,
)
from traffic.models import RiskLevel

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MAX_PAGE = 500


class IncidentDbError(TrafficError):
    """The incident database cannot be reached or written (the caller keeps the write for later)."""


class Base(DeclarativeBase):
    """The incident tables."""


class IncidentRow(Base):
    """One incident: one alert life (``natural_key``) and its workflow status."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    natural_key: Mapped[str] = mapped_column(String(200), unique=True)
    alert_id: Mapped[str] = mapped_column(String(200))
    camera_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(8))
    level_rank: Mapped[int] = mapped_column(Integer)
    risk_types: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    track_ids: Mapped[list[int]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    frame_ids: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[float] = mapped_column(Float)
    snapshot_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The annotated snapshot, relative to the evidence directory."""
    clip_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The clip, relative to the evidence directory."""

    __table_args__ = (
        Index("ix_incidents_first_seen", "first_seen"),
        Index("ix_incidents_camera_first_seen", "camera_id", "first_seen"),
        Index("ix_incidents_status_first_seen", "status", "first_seen"),
    )


class ActionRow(Base):
    """One operator action on an incident: the append-only audit log."""

    __tablename__ = "incident_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float)
    who: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    status_before: Mapped[str] = mapped_column(String(16))
    status_after: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index("ix_incident_actions_incident", "incident_id", "at"),)


@dataclass(frozen=True)
class IncidentQuery:
    """Filters, order and page of an incident listing (all filters optional, combined with AND)."""

    camera_id: str | None = None
    kind: IncidentKind | None = None
    min_level: RiskLevel | None = None
    status: IncidentStatus | None = None
    since: float | None = None
    """``first_seen`` at or after (epoch seconds)."""
    until: float | None = None
    """``first_seen`` before."""
    newest_first: bool = True
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class IncidentPage:
    """One page of a listing; ``next_offset`` is None on the last page."""

    incidents: tuple[Incident, ...]
    next_offset: int | None


def database_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``); SQLite in WAL mode with a
    busy timeout, so the web server and several workers share one file."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            connection.isolation_level = None  # transactions are begun below, not by the driver
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # Take the write lock at the start: a read-then-write transaction in WAL mode would otherwise
            # fail at once (SQLITE_BUSY_SNAPSHOT) when another writer committed in between, not wait.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (idempotent; concurrent starters are serialised by
    the database's own locking of the version table)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise IncidentDbError(f"incident database failed ({type(exc).__name__})") from exc


def open_store(url: str) -> IncidentStore:
    """A store on ``url`` with its schema migrated (``IncidentDbError`` when the database is not there)."""
    engine = database_engine(url)
    migrate(engine)
    return IncidentStore(engine)


class IncidentStore:
    """Writes sightings and operator actions, reads incidents; every call is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A transaction; database errors become ``IncidentDbError``."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IncidentError:
            raise
        except SQLAlchemyError as exc:
            raise IncidentDbError(f"incident database failed ({type(exc).__name__})") from exc

    def record(
        self, sighting: IncidentSighting, *, key_id: str | None = None, now: float | None = None
    ) -> tuple[Incident, bool]:
        """Create or update the sighting's incident (idempotent on its natural key); the incident after it
        and whether this call created it."""
        now = time.time() if now is None else now
        for attempt in (1, 2):
            try:
                with self._session() as session:
                    row = session.scalars(
                        select(IncidentRow).where(IncidentRow.natural_key == sighting.natural_key).with_for_update()
                    ).one_or_none()
                    created = row is None
                    if row is None:
                        row = _new_row(sighting, key_id, now)
                        session.add(row)
                        session.flush()
                    else:
                        _update_row(row, sighting, key_id, now)
                    return _incident(row), created
            except IncidentDbError as exc:
                # Two writers inserted the same incident at once: the loser updates the winner's row.
                if attempt == 1 and isinstance(exc.__cause__, IntegrityError):
                    continue
                raise
        raise AssertionError("unreachable")

    def act(
        self, incident_id: int, action: IncidentAction, who: str, note: str = "", *, now: float | None = None
    ) -> tuple[Incident, OperatorAction]:
        """Apply an operator action (``IncidentError``: ``not_found``, ``invalid_transition``); the incident
        after it and the audit entry."""
        now = time.time() if now is None else now
        with self._session() as session:
            row = session.get(IncidentRow, incident_id, with_for_update=True)
            if row is None:
                raise IncidentError("not_found", f"no incident {incident_id}")
            before = IncidentStatus(row.status)
            after = next_status(before, action)
            row.status, row.updated_at = after.value, now
            entry = ActionRow(
                incident_id=row.id, at=now, who=who, action=action.value, note=note,
                status_before=before.value, status_after=after.value,
            )  # fmt: skip
            session.add(entry)
            return _incident(row), _action(entry)

    def get(self, incident_id: int) -> tuple[Incident, tuple[OperatorAction, ...]] | None:
        """The incident and its audit log (oldest first), or None."""
        with self._session() as session:
            row = session.get(IncidentRow, incident_id)
            if row is None:
                return None
            actions = session.scalars(
                select(ActionRow).where(ActionRow.incident_id == incident_id).order_by(ActionRow.at, ActionRow.id)
            ).all()
            return _incident(row), tuple(_action(a) for a in actions)

    def query(self, query: IncidentQuery) -> IncidentPage:
        """One page of incidents matching ``query``, by ``first_seen`` (then id)."""
        limit = max(1, min(MAX_PAGE, query.limit))
        statement = select(IncidentRow)
        if query.camera_id is not None:
            statement = statement.where(IncidentRow.camera_id == query.camera_id)
        if query.kind is not None:
            statement = statement.where(IncidentRow.kind == query.kind.value)
        if query.min_level is not None:
            statement = statement.where(IncidentRow.level_rank >= query.min_level.rank)
        if query.status is not None:
            statement = statement.where(IncidentRow.status == query.status.value)
        if query.since is not None:
            statement = statement.where(IncidentRow.first_seen >= query.since)
        if query.until is not None:
            statement = statement.where(IncidentRow.first_seen < query.until)
        order = (
            (IncidentRow.first_seen.desc(), IncidentRow.id.desc())
            if query.newest_first
            else (IncidentRow.first_seen.asc(), IncidentRow.id.asc())
        )
        statement = statement.order_by(*order).offset(max(0, query.offset)).limit(limit + 1)
        with self._session() as session:
            rows: Sequence[IncidentRow] = session.scalars(statement).all()
        more = len(rows) > limit
        return IncidentPage(tuple(_incident(r) for r in rows[:limit]), max(0, query.offset) + limit if more else None)

    def set_evidence(
        self, natural_key: str, *, snapshot: str | None = None, clip: str | None = None, now: float | None = None
    ) -> Incident | None:
        """Record the incident's evidence files (those given); the incident after it, None when unknown."""
        now = time.time() if now is None else now
        with self._session() as session:
            row = session.scalars(
                select(IncidentRow).where(IncidentRow.natural_key == natural_key).with_for_update()
            ).one_or_none()
            if row is None:
                return None
            if snapshot is not None:
                row.snapshot_path = snapshot
            if clip is not None:
                row.clip_path = clip
            row.updated_at = now
            return _incident(row)

    def expire(self, cutoffs: Mapping[tuple[IncidentKind, RiskLevel], float]) -> tuple[int, list[str]]:
        """Delete the incidents (and their audit logs) of each kind and level first seen before its cutoff;
        how many, and the evidence files they had (for the caller to delete with them)."""
        deleted = 0
        files: list[str] = []
        with self._session() as session:
            for (kind, level), cutoff in cutoffs.items():
                expired = (
                    IncidentRow.kind == kind.value,
                    IncidentRow.level == level.value,
                    IncidentRow.first_seen < cutoff,
                )
                for snapshot, clip in session.execute(
                    select(IncidentRow.snapshot_path, IncidentRow.clip_path).where(*expired)
                ):
                    files += [p for p in (snapshot, clip) if p]
                result = session.execute(delete(IncidentRow).where(*expired))
                deleted += int(getattr(result, "rowcount", 0) or 0)
        return deleted, files

    def evidence_paths(self) -> set[str]:
        """Every evidence file the incidents name (to find files no incident owns any more)."""
        with self._session() as session:
            rows = session.execute(select(IncidentRow.snapshot_path, IncidentRow.clip_path)).all()
        return {p for row in rows for p in row if p}

    def count(self) -> int:
        """How many incidents are stored."""
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(IncidentRow)) or 0)


def _new_row(sighting: IncidentSighting, key_id: str | None, now: float) -> IncidentRow:
    alert = sighting.alert
    return IncidentRow(
        natural_key=sighting.natural_key,
        alert_id=alert.alert_id,
        camera_id=alert.camera_id,
        kind=sighting.kind.value,
        level=alert.level.value,
        level_rank=alert.level.rank,
        risk_types=list(alert.risk_types),
        description=alert.description,
        first_seen=alert.first_seen,
        last_seen=alert.last_seen,
        ended_at=alert.last_seen if sighting.ended else None,
        track_ids=list(alert.tracks),
        model=alert.model,
        key_id=key_id or alert.key_id,
        frame_ids=[alert.frame_id],
        status=IncidentStatus.OPEN.value,
        updated_at=now,
    )


def _update_row(row: IncidentRow, sighting: IncidentSighting, key_id: str | None, now: float) -> None:
    """Fold a later (or repeated) sighting into the row: the worst level, the latest words and frames."""
    alert = sighting.alert
    level = worse(RiskLevel(row.level), alert.level)
    if alert.last_seen >= row.last_seen:
        row.risk_types, row.description = list(alert.risk_types), alert.description
        row.track_ids = list(alert.tracks) or row.track_ids
        row.model = alert.model or row.model
        row.key_id = key_id or alert.key_id or row.key_id
    row.level, row.level_rank = level.value, level.rank
    row.last_seen = max(row.last_seen, alert.last_seen)
    if sighting.ended:
        row.ended_at = max(row.ended_at or 0.0, alert.last_seen)
    row.frame_ids = list(kept_frame_ids(tuple(row.frame_ids), alert.frame_id))
    row.updated_at = now


def _incident(row: IncidentRow) -> Incident:
    return Incident(
        incident_id=row.id,
        natural_key=row.natural_key,
        alert_id=row.alert_id,
        camera_id=row.camera_id,
        kind=IncidentKind(row.kind),
        level=RiskLevel(row.level),
        risk_types=tuple(row.risk_types),
        description=row.description,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        ended_at=row.ended_at,
        track_ids=tuple(row.track_ids),
        model=row.model,
        key_id=row.key_id,
        frame_ids=tuple(row.frame_ids),
        status=IncidentStatus(row.status),
        updated_at=row.updated_at,
        snapshot_path=row.snapshot_path,
        clip_path=row.clip_path,
    )


def _action(row: ActionRow) -> OperatorAction:
    return OperatorAction(
        action=IncidentAction(row.action),
        who=row.who,
        at=row.at,
        note=row.note,
        status_before=IncidentStatus(row.status_before),
        status_after=IncidentStatus(row.status_after),
    )
