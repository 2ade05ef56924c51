"""The run ledger: every run of every job, scheduled, manual or caught up, and how it ended.

A run left 'running' by a crash is marked 'abandoned' at the next start (its process is gone), so
nothing stays 'running' forever.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, select

from scheduler.state import StateStore, UTCDateTime, metadata, register_component, utcnow

runs = Table(
    "runs", metadata,
    Column("id", String(36), primary_key=True),
    Column("job", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),  # scheduled | manual | catch-up
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=True),
    Column("scheduled_for", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # running | ok | problems | failed | skipped | missed | cancelled | abandoned
    Column("status", String(16), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("summary", Text, nullable=True),
    Column("error_code", String(16), nullable=True),
    Column("message", Text, nullable=True),
    Index("runs_job_started", "job", "started_at"),
    Index("runs_status", "status"),
)

register_component("ledger", [lambda connection: runs.create(connection, checkfirst=True)])

FINAL_STATUSES = ("ok", "problems", "failed", "skipped", "missed", "cancelled", "abandoned")


def hostname() -> str:
    return os.environ.get("JACKPOT_MAINT_HOST") or socket.gethostname()


@dataclass
class RunRecord:
    id: str
    job: str
    trigger: str
    host: str
    status: str
    started_at: datetime
    pid: int | None = None
    scheduled_for: datetime | None = None
    finished_at: datetime | None = None
    dry_run: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    message: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "job": self.job, "trigger": self.trigger, "host": self.host, "pid": self.pid,
            "status": self.status, "dry_run": self.dry_run,
            "scheduled_for": _iso(self.scheduled_for), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at), "duration_seconds": self.duration_seconds,
            "summary": self.summary, "error_code": self.error_code, "message": self.message,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _record(row: Any) -> RunRecord:
    return RunRecord(id=row.id, job=row.job, trigger=row.trigger, host=row.host, pid=row.pid, status=row.status,
                     started_at=row.started_at, scheduled_for=row.scheduled_for, finished_at=row.finished_at,
                     dry_run=bool(row.dry_run), summary=json.loads(row.summary) if row.summary else {},
                     error_code=row.error_code, message=row.message)


def start_run(state: StateStore, job: str, trigger: str, *, scheduled_for: datetime | None = None,
              dry_run: bool = False, status: str = "running", message: str | None = None,
              run_id: str | None = None) -> RunRecord:
    """Record a run as started (or, with status=skipped/missed, as a run that did not happen)."""
    now = utcnow()
    record = RunRecord(id=run_id or str(uuid.uuid4()), job=job, trigger=trigger, host=hostname(), pid=os.getpid(),
                       status=status, started_at=now, scheduled_for=scheduled_for, dry_run=dry_run, message=message,
                       finished_at=None if status == "running" else now)
    with state.begin() as connection:
        connection.execute(runs.insert().values(
            id=record.id, job=job, trigger=trigger, host=record.host, pid=record.pid, scheduled_for=scheduled_for,
            started_at=now, finished_at=record.finished_at, status=status, dry_run=dry_run, message=message))
    return record


def finish_run(state: StateStore, record: RunRecord, status: str, *, summary: dict[str, Any] | None = None,
               error_code: str | None = None, message: str | None = None) -> RunRecord:
    record.status = status
    record.finished_at = utcnow()
    record.summary = summary or {}
    record.error_code = error_code
    record.message = message
    with state.begin() as connection:
        connection.execute(runs.update().where(runs.c.id == record.id).values(
            status=status, finished_at=record.finished_at, summary=json.dumps(record.summary, default=str),
            error_code=error_code, message=message))
    return record


def mark_abandoned(state: StateStore, *, host: str | None = None) -> list[RunRecord]:
    """Mark runs of this host left 'running' by a process that no longer exists as 'abandoned'."""
    host = host or hostname()
    with state.connect() as connection:
        rows = connection.execute(select(runs).where(runs.c.status == "running", runs.c.host == host)).all()
    abandoned = []
    for row in rows:
        if row.pid is not None and row.pid != os.getpid() and pid_alive(row.pid):
            continue
        if row.pid == os.getpid():
            continue
        record = _record(row)
        with state.begin() as connection:
            connection.execute(runs.update().where(runs.c.id == row.id, runs.c.status == "running").values(
                status="abandoned", finished_at=utcnow(), error_code="J005",
                message=f"the process (pid {row.pid}) ended while the run was in progress; marked abandoned"))
        record.status = "abandoned"
        abandoned.append(record)
    return abandoned


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # the state letter follows the command name in parentheses
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def running_runs(state: StateStore, job: str | None = None) -> list[RunRecord]:
    query = select(runs).where(runs.c.status == "running").order_by(runs.c.started_at)
    if job:
        query = query.where(runs.c.job == job)
    with state.connect() as connection:
        return [_record(row) for row in connection.execute(query).all()]


def list_runs(state: StateStore, *, job: str | None = None, limit: int = 20, status: str | None = None,
              since: datetime | None = None) -> list[RunRecord]:
    """Newest first."""
    query = select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
    if job:
        query = query.where(runs.c.job == job)
    if status:
        query = query.where(runs.c.status == status)
    if since:
        query = query.where(runs.c.started_at >= since)
    with state.connect() as connection:
        return [_record(row) for row in connection.execute(query).all()]


def get_run(state: StateStore, run_id: str) -> RunRecord | None:
    with state.connect() as connection:
        row = connection.execute(select(runs).where(runs.c.id == run_id)).first()
    return _record(row) if row else None


def last_run(state: StateStore, job: str, *, statuses: tuple[str, ...] | None = None) -> RunRecord | None:
    query = select(runs).where(runs.c.job == job).order_by(runs.c.started_at.desc()).limit(1)
    if statuses:
        query = query.where(runs.c.status.in_(statuses))
    with state.connect() as connection:
        row = connection.execute(query).first()
    return _record(row) if row else None


def prune(state: StateStore, retention_days: int) -> int:
    """Delete finished runs older than the retention. Return how many."""
    cutoff = utcnow() - timedelta(days=retention_days)
    with state.begin() as connection:
        return connection.execute(runs.delete().where(runs.c.started_at < cutoff, runs.c.status != "running")).rowcount
