"""Silences: "do not send notifications for alerts matching this, for this long".

An alert still opens, updates and escalates while silenced: it is recorded and shown; only what
would have been sent is recorded as suppressed instead. Configured maintenance windows
(alerts.maintenance_windows) act as recurring silences.

MATCH is a shell-style glob tested against the alert's key, category, error code, host and source:
`monitor:*`, `performance`, `J006`, `host-2`, `*` (everything).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import Column, Integer, String, Table, Text, select

from scheduler.state import StateStore, UTCDateTime, metadata, register_component

silences = Table(
    "alert_silences", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("match", String(512), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_by", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime, nullable=True),
)

register_component("silences", [lambda connection: silences.create(connection, checkfirst=True)])


@dataclass
class Silence:
    id: int
    match: str
    reason: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    removed_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.removed_at is None and self.created_at <= now < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "match": self.match, "reason": self.reason, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
                "removed_at": self.removed_at.isoformat() if self.removed_at else None}


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def matches(pattern: str, fields: Iterable[str | None]) -> bool:
    """Given a glob and the alert's key/category/code/host/source, return whether any matches."""
    pattern = pattern.strip()
    return any(value is not None and fnmatch.fnmatchcase(value, pattern) for value in fields)


def add_silence(state: StateStore, match: str, duration_seconds: float, *, reason: str | None = None,
                created_by: str | None = None, now: datetime | None = None) -> Silence:
    """Silence alerts matching `match` for duration_seconds from now. Return the silence."""
    now = _now(now)
    expires = now + timedelta(seconds=duration_seconds)
    created_by = created_by or os.environ.get("SUDO_USER") or os.environ.get("USER")
    with state.begin() as connection:
        silence_id = connection.execute(silences.insert().values(
            match=match, reason=reason, created_by=created_by, created_at=now, expires_at=expires)).inserted_primary_key[0]
    return Silence(int(silence_id), match, reason, created_by, now, expires)


def remove_silence(state: StateStore, silence_id: int, *, now: datetime | None = None) -> bool:
    """End a silence now. Return False if there is no such active silence."""
    with state.begin() as connection:
        return connection.execute(silences.update().where(silences.c.id == silence_id,
                                                          silences.c.removed_at.is_(None))
                                  .values(removed_at=_now(now))).rowcount == 1


def list_silences(state: StateStore, *, include_expired: bool = False, now: datetime | None = None,
                  connection: Any = None) -> list[Silence]:
    """Active silences (all with include_expired). Pass the caller's connection when inside a
    transaction: SQLite allows one writer, and a second connection would wait for the first."""
    now = _now(now)
    query = select(silences).order_by(silences.c.id)
    if not include_expired:
        query = query.where(silences.c.removed_at.is_(None), silences.c.expires_at > now)
    if connection is not None:
        rows = connection.execute(query).all()
    else:
        with state.connect() as own:
            rows = own.execute(query).all()
    return [Silence(row.id, row.match, row.reason, row.created_by, row.created_at, row.expires_at, row.removed_at)
            for row in rows]


def silenced_by(settings, state: StateStore, fields: list[str | None], now: datetime | None = None,
                connection: Any = None) -> str | None:
    """Given an alert's key/category/code/host/source, return why it is silenced now, or None."""
    now = _now(now)
    for silence in list_silences(state, now=now, connection=connection):
        if silence.active(now) and matches(silence.match, fields):
            return f"silence #{silence.id} ({silence.match}) until {silence.expires_at:%Y-%m-%d %H:%M} UTC" + (
                f": {silence.reason}" if silence.reason else "")
    for window in settings.alerts.maintenance_windows:
        if matches(window.match, fields) and in_window(settings, window.cron, window.duration, now):
            return f"maintenance window {window.cron!r} for {window.duration:g}s: {window.reason}"
    return None


def in_window(settings, cron: str, duration_seconds: float, now: datetime) -> bool:
    """Whether now falls within duration_seconds after a fire time of the cron expression."""
    from apscheduler.triggers.cron import CronTrigger

    zone = settings.scheduler.timezone
    trigger = CronTrigger.from_crontab(cron, timezone=zone) if zone else CronTrigger.from_crontab(cron)
    start = now - timedelta(seconds=duration_seconds)
    opened = trigger.get_next_fire_time(None, start.astimezone(trigger.timezone))
    return opened is not None and opened <= now
