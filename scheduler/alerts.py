"""Alerts: every problem the daemon meets ends here, is remembered, routed, escalated and resolved.

An alert is keyed by its dedup key (a finding's key, plus the host for host-scoped problems), so the
same problem seen again updates it instead of opening another, and hosts sharing a PostgreSQL state
store page once for a database problem (INSERT ... ON CONFLICT on the open key).

Nothing is sent twice and nothing is lost: every notification is first written to an outbox, one
row per (alert, event, target), then claimed with a conditional UPDATE (only one process wins), sent
and marked sent; a failed send stays pending and is retried with backoff, by whichever process runs
process() next. A restart reads the same rows.

Public API (the runner, the daemon and the monitor call these):
    on_run_finished(settings, state, record, result, error)   after every run
    report(settings, state, finding, *, source)                a Finding: raise / update / resolve
    process(settings, state, now=None)                         escalation, reminders, retries

Who is told and when: scheduler/escalation.py. What they read: scheduler/alert_message.py. How it
reaches them: scheduler/notifiers/. Silences: scheduler/silences.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from loguru import logger
from sqlalchemy import Column, Index, Integer, String, Table, Text, UniqueConstraint, or_, select

from scheduler.alert_message import CATEGORY_LABELS, IMPACT, alert_title, message_kind, render_message  # noqa: F401
from scheduler.escalation import (TargetCheck, configured_targets, contact_for, format_duration,  # noqa: F401
                                  next_level, notifier_target_ids, recipients_of_level, send_test, start_level)
from scheduler.redact import redact
from scheduler.state import StateStore, UTCDateTime, metadata, register_component

alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(36), nullable=False, unique=True),
    Column("dedup_key", String(512), nullable=False),
    # the dedup key while the alert is open (firing, acknowledged, or resolved within the flap
    # window); NULL once closed. Unique: one open alert per problem, across processes and hosts.
    Column("open_key", String(512), nullable=True, unique=True),
    Column("source", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("category", String(32), nullable=False),
    Column("severity", String(4), nullable=False),
    Column("code", String(16), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # firing | acknowledged | resolved
    Column("level", Integer, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("level_since", UTCDateTime, nullable=False),
    Column("occurrences", Integer, nullable=False, default=1),
    Column("flaps", Integer, nullable=False, default=0),
    Column("acked_at", UTCDateTime, nullable=True),
    Column("acked_by", String(255), nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("resolved_by", String(255), nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("last_notified_at", UTCDateTime, nullable=True),
    Column("reminders", Integer, nullable=False, default=0),
    Column("ack_reminders", Integer, nullable=False, default=0),
    Column("last_ack_reminder_at", UTCDateTime, nullable=True),
    Column("evidence", Text, nullable=False),
    Column("history", Text, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    Index("alerts_dedup_key", "dedup_key"),
    Index("alerts_status", "status"),
)

notifications = Table(
    "alert_notifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, nullable=False),
    Column("event", String(64), nullable=False),  # level:N | reminder:N | ack-reminder:N | resolved
    Column("target", String(160), nullable=False),
    Column("level", Integer, nullable=False),
    # pending | sending | sent | failed | suppressed | obsolete
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime, nullable=True),
    Column("claimed_by", String(255), nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("kind", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("alert_id", "event", "target", name="alert_notifications_once"),
    Index("alert_notifications_due", "status", "next_attempt_at"),
    Index("alert_notifications_alert", "alert_id"),
)


def _create_tables(connection) -> None:  # noqa: ANN001
    alerts.create(connection, checkfirst=True)
    notifications.create(connection, checkfirst=True)


register_component("alerts", [_create_tables])

OPEN_STATUSES = ("firing", "acknowledged")
JOB_SEVERITY = {"service_down": "P1", "data_corruption": "P2", "performance": "P2", "security": "P1",
                "infrastructure": "P2", "configuration": "P3", "maintenance": "P3"}
_SENDING_STALE_AFTER = 120.0  # a row 'sending' this long past its timeout: the sender died mid-send


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _hostname() -> str:
    from scheduler.ledger import hostname

    return hostname()


# ---- the alert as data ---------------------------------------------------------------------------


@dataclass
class Alert:
    id: int
    uid: str
    dedup_key: str
    open: bool
    source: str
    title: str
    category: str
    severity: str
    code: str
    scope: str
    host: str
    status: str
    level: int
    first_seen: datetime
    last_seen: datetime
    level_since: datetime
    occurrences: int
    flaps: int
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    closed_at: datetime | None
    last_notified_at: datetime | None
    reminders: int
    ack_reminders: int
    last_ack_reminder_at: datetime | None
    evidence: dict[str, Any]
    history: list[dict[str, Any]]
    version: int

    def match_fields(self) -> list[str | None]:
        """What a silence's glob is tested against."""
        return [self.dedup_key, self.category, self.code, self.host, self.source]

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id, "key": self.dedup_key, "status": self.status, "open": self.open, "title": self.title,
            "category": self.category, "severity": self.severity, "code": self.code, "scope": self.scope,
            "host": self.host, "source": self.source, "level": self.level, "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen), "occurrences": self.occurrences, "flaps": self.flaps,
            "acknowledged_at": iso(self.acked_at), "acknowledged_by": self.acked_by,
            "resolved_at": iso(self.resolved_at), "resolved_by": self.resolved_by, "closed_at": iso(self.closed_at),
            "symptoms": self.evidence.get("symptoms", []), "attempts": self.evidence.get("attempts", []),
            "logs": self.evidence.get("logs", []), "details": self.evidence.get("details", {}),
            "history": self.history,
        }


def _alert(row: Any) -> Alert:
    return Alert(
        id=row.id, uid=row.uid, dedup_key=row.dedup_key, open=row.open_key is not None, source=row.source,
        title=row.title, category=row.category, severity=row.severity, code=row.code, scope=row.scope, host=row.host,
        status=row.status, level=row.level, first_seen=row.first_seen, last_seen=row.last_seen,
        level_since=row.level_since, occurrences=row.occurrences, flaps=row.flaps, acked_at=row.acked_at,
        acked_by=row.acked_by, resolved_at=row.resolved_at, resolved_by=row.resolved_by, closed_at=row.closed_at,
        last_notified_at=row.last_notified_at, reminders=row.reminders, ack_reminders=row.ack_reminders,
        last_ack_reminder_at=row.last_ack_reminder_at, evidence=json.loads(row.evidence or "{}"),
        history=json.loads(row.history or "[]"), version=row.version)


def _history_entry(now: datetime, event: str, detail: str, level: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": now.isoformat(), "event": event, "detail": detail}
    if level is not None:
        entry["level"] = level
    return entry


# ---- reading -------------------------------------------------------------------------------------


def get_alert(state: StateStore, alert_id: int) -> Alert | None:
    with state.connect() as connection:
        row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    return _alert(row) if row else None


def list_alerts(state: StateStore, *, include_closed: bool = False, limit: int = 200) -> list[Alert]:
    """Open alerts (firing, acknowledged, or resolved within the flap window), newest first; with
    include_closed, closed ones too."""
    query = select(alerts).order_by(alerts.c.last_seen.desc(), alerts.c.id.desc()).limit(limit)
    if not include_closed:
        query = query.where(alerts.c.open_key.is_not(None))
    with state.connect() as connection:
        return [_alert(row) for row in connection.execute(query).all()]


def open_alert_count(state: StateStore) -> int:
    """How many alerts are firing or acknowledged (for `status` and metrics)."""
    from sqlalchemy import func

    with state.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(alerts)
                                      .where(alerts.c.status.in_(OPEN_STATUSES))).scalar() or 0)


def notifications_of(state: StateStore, alert_id: int) -> list[dict[str, Any]]:
    with state.connect() as connection:
        rows = connection.execute(select(notifications).where(notifications.c.alert_id == alert_id)
                                  .order_by(notifications.c.id)).all()
    return [{"id": row.id, "event": row.event, "target": row.target, "level": row.level, "status": row.status,
             "attempts": row.attempts, "created_at": row.created_at.isoformat(),
             "sent_at": row.sent_at.isoformat() if row.sent_at else None,
             "next_attempt_at": row.next_attempt_at.isoformat() if row.status == "pending" else None,
             "error": redact(row.last_error) if row.last_error else None} for row in rows]


# ---- writing: the outbox -------------------------------------------------------------------------


def _insert(state: StateStore, table: Table):
    if state.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table)


def _claimer() -> str:
    return f"{_hostname()}:{os.getpid()}:{threading.get_ident()}"


def _enqueue(connection, state: StateStore, settings, alert: Alert, event: str, level: int, target_ids: list[str],
             now: datetime, suppressed: str | None, *, claim: bool = False) -> list[Any]:
    """Write one outbox row per target for this event (once: a row that exists is left alone).
    With claim, the new rows are written already claimed by this process (it sends them right after
    the commit, saving a round trip on the path from detection to the first page). Return the new
    rows that are to be sent."""
    if not target_ids:
        logger.warning("alert #{} {}: no configured notifier reaches level {} of category {}; recorded, not sent "
                       "(configure [notifiers.<name>] for its contacts, or alerts.fallback)",
                       alert.id, event, level, alert.category)
        return []
    title, body = render_message(settings, alert, event, level, now)
    contact_name, _ = contact_for(settings, alert.category)
    data = {**alert.to_dict(), "event": event, "level": level, "level_name": settings.alerts.level(level).name,
            "contact": contact_name}
    if suppressed:
        data["suppressed"] = suppressed
    created = []
    for target_id in target_ids:
        statement = _insert(state, notifications).values(
            alert_id=alert.id, event=event, target=target_id, level=level,
            status="suppressed" if suppressed else ("sending" if claim else "pending"),
            attempts=1 if claim and not suppressed else 0, claimed_at=_utcnow() if claim else None,
            claimed_by=_claimer() if claim else None, created_at=now, next_attempt_at=now,
            last_error=suppressed, kind=message_kind(event, alert.severity), title=title, body=body,
            data=json.dumps(data, default=str),
        ).on_conflict_do_nothing(index_elements=["alert_id", "event", "target"]).returning(*notifications.c)
        row = connection.execute(statement).first()
        if row is not None and not suppressed:
            created.append(row)
    if suppressed:
        logger.info("alert #{} {} to level {} suppressed: {}", alert.id, event, level, suppressed)
    return created


def _silenced(settings, state: StateStore, alert: Alert, now: datetime, connection: Any = None) -> str | None:
    from scheduler.silences import silenced_by

    try:
        return silenced_by(settings, state, alert.match_fields(), now, connection=connection)
    except Exception as error:  # noqa: BLE001 - a broken silence must not lose a page
        logger.error("cannot check silences for alert #{}: {}", alert.id, redact(str(error)))
        return None


# ---- dispatch ------------------------------------------------------------------------------------


def _backoff(settings, attempts: int) -> float:
    waits = settings.alerts.retry_backoff
    return waits[min(max(attempts - 1, 0), len(waits) - 1)]


def _deliver(settings, state: StateStore, row: Any, target: Any, now: datetime, outcome: dict[int, str]) -> None:
    from scheduler.notifiers import Message, NotifyFailed

    message = Message(title=row.title, body=row.body, kind=row.kind, data=json.loads(row.data))
    started = time.monotonic()
    error: str | None = None
    try:
        target.send(message, target.timeout or settings.alerts.send_timeout)
    except NotifyFailed as failure:
        error = redact(str(failure))
    except Exception as failure:  # noqa: BLE001 - a notifier's bug is a failed send
        error = redact(f"{type(failure).__name__}: {failure}")
    elapsed = time.monotonic() - started
    try:
        with state.begin() as connection:
            if error is None:
                connection.execute(notifications.update().where(notifications.c.id == row.id,
                                                                notifications.c.status == "sending")
                                   .values(status="sent", sent_at=now + timedelta(seconds=elapsed), last_error=None))
            else:
                attempts = row.attempts
                give_up = (now - row.created_at).total_seconds() >= settings.alerts.retry_for
                connection.execute(notifications.update().where(notifications.c.id == row.id,
                                                                notifications.c.status == "sending").values(
                    status="failed" if give_up else "pending", last_error=error,
                    next_attempt_at=now + timedelta(seconds=_backoff(settings, attempts))))
    except Exception as failure:  # noqa: BLE001 - the state store is down: the row stays 'sending', retried later
        logger.error("cannot record the send of notification {}: {}", row.id, redact(str(failure)))
    outcome[row.id] = "sent" if error is None else "failed"
    if error is None:
        logger.info("alert #{} {}: sent to {} in {:.2f}s", row.alert_id, row.event, target.display, elapsed)
    else:
        logger.warning("alert #{} {}: sending to {} failed (attempt {}): {}", row.alert_id, row.event,
                       target.display, row.attempts, error)


def _claim(state: StateStore, row_id: int) -> Any | None:
    """Take one pending outbox row for this process: a conditional UPDATE that only one process wins
    (on PostgreSQL a concurrent claimer waits for the row and then finds it no longer pending)."""
    claimer = _claimer()
    with state.begin() as connection:
        claimed = connection.execute(notifications.update().where(notifications.c.id == row_id,
                                                                  notifications.c.status == "pending")
                                     .values(status="sending", claimed_at=_utcnow(), claimed_by=claimer,
                                             attempts=notifications.c.attempts + 1)).rowcount
        if claimed != 1:
            return None
        return connection.execute(select(notifications).where(notifications.c.id == row_id)).first()


def _dispatch(settings, state: StateStore, now: datetime, claimed: list[Any] | None = None) -> dict[int, str]:
    """Send the due outbox rows (or the rows this process just wrote already claimed), each target
    in its own thread with its own timeout. Wait at most the longest send timeout; a hung target
    delays no other. Return {row id: outcome}."""
    query = (select(notifications.c.id).select_from(notifications.join(alerts, alerts.c.id == notifications.c.alert_id))
             .where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now,
                    # a firing notice for an alert that recovered meanwhile waits: it may reopen (flap)
                    or_(alerts.c.status != "resolved", notifications.c.event == "resolved"))
             .order_by(notifications.c.id))
    if claimed is None:
        with state.connect() as connection:
            due = [row[0] for row in connection.execute(query).all()]
    else:
        due = claimed
    if not due:
        return {}
    targets, _ = configured_targets(settings)
    outcome: dict[int, str] = {}
    threads: list[tuple[threading.Thread, float]] = []
    claimed_rows = []
    for item in due:
        row = item if claimed is not None else _claim(state, item)
        if row is None:
            continue
        target = targets.get(row.target)
        if target is None:
            with state.begin() as connection:
                connection.execute(notifications.update().where(notifications.c.id == row.id).values(
                    status="failed", last_error=f"notifier target {row.target!r} is no longer configured"))
            outcome[row.id] = "failed"
            continue
        claimed_rows.append(row)
        timeout = target.timeout or settings.alerts.send_timeout
        thread = threading.Thread(target=_deliver, args=(settings, state, row, target, now, outcome),
                                  name=f"notify-{row.target}", daemon=True)
        thread.start()
        threads.append((thread, timeout))
    # never wait longer than the send timeout: a send still running after it (apprise's socket
    # timeouts make that rare) records its own outcome when it ends
    deadline = time.monotonic() + max((timeout for _, timeout in threads), default=0)
    for thread, _ in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    _use_fallback(settings, state, claimed_rows, now)
    return outcome


def _use_fallback(settings, state: StateStore, rows: list[Any], now: datetime) -> None:
    """While every target of an event fails, the fallback notifier gets it too (once)."""
    fallback = settings.alerts.fallback
    if not fallback or not rows:
        return
    fallback_ids = notifier_target_ids(settings, fallback)
    if not fallback_ids:
        return
    for alert_id, event in {(row.alert_id, row.event) for row in rows}:
        with state.connect() as connection:
            statuses = connection.execute(select(notifications.c.target, notifications.c.status).where(
                notifications.c.alert_id == alert_id, notifications.c.event == event)).all()
        if any(status in ("sent", "sending") for _, status in statuses):
            continue
        if all(target in fallback_ids for target, _ in statuses):
            continue
        alert = get_alert(state, alert_id)
        if alert is None:
            continue
        level = max((row.level for row in rows if row.alert_id == alert_id and row.event == event), default=alert.level)
        with state.begin() as connection:
            created = _enqueue(connection, state, settings, alert, event, level,
                               [target for target in fallback_ids if target not in {t for t, _ in statuses}], now, None,
                               claim=True)
        if created:
            logger.warning("alert #{} {}: every target failed; trying the fallback {}", alert_id, event, fallback)
            _dispatch(settings, state, now, claimed=created)


def _recover_stale_sends(settings, state: StateStore, now: datetime) -> None:
    """Rows left 'sending' by a process that died mid-send go back to pending: a page that may be a
    duplicate is better than a page lost."""
    # real time, not the injected clock: this is about a process dying, not about the alert's clocks
    cutoff = _utcnow() - timedelta(seconds=settings.alerts.send_timeout + _SENDING_STALE_AFTER)
    with state.begin() as connection:
        count = connection.execute(notifications.update().where(notifications.c.status == "sending",
                                                                notifications.c.claimed_at < cutoff)
                                   .values(status="pending", last_error="the sending process stopped mid-send; "
                                                                         "retrying (the receiver may see it twice)")).rowcount
    if count:
        logger.warning("{} notification(s) interrupted mid-send are retried", count)


# ---- raising, updating, resolving ----------------------------------------------------------------


def dedup_key(finding, host: str | None = None) -> str:
    """The alert key of a finding: its key, plus @host when the problem is the host's own."""
    return f"{finding.key}@{host or _hostname()}" if finding.scope == "host" else finding.key


def report(settings, state: StateStore, finding, *, source: str, now: datetime | None = None) -> None:
    """Given a Finding: ok=False raises its alert (or updates the open one: last seen, occurrences,
    evidence), ok=True resolves it if open. A new alert's first notification is sent before this
    returns (at most the send timeout later; a hung target delays no other)."""
    if not settings.alerts.enabled:
        return
    now = now or _utcnow()
    key = dedup_key(finding)
    if finding.ok:
        _recover(settings, state, key, now, by=f"recovery ({source})")
        return
    configured_targets(settings)  # built (once) before the transaction, not while holding SQLite's write lock
    created = _raise(settings, state, finding, key=key, source=source, now=now)
    if created:
        _dispatch(settings, state, now, claimed=created)


def _raise(settings, state: StateStore, finding, *, key: str, source: str, now: datetime) -> list[Any]:
    host = _hostname()
    level = min(start_level(settings, finding.category, finding.code), settings.alerts.level_count())
    evidence = json.dumps({"symptoms": [redact(str(item)) for item in finding.symptoms],
                           "attempts": [redact(str(item)) for item in finding.attempts],
                           "logs": [redact(str(item)) for item in finding.logs],
                           "details": json.loads(redact(json.dumps(finding.details, default=str)))}, default=str)
    new_uid = str(uuid.uuid4())
    started = "starts" if level == 1 else f"starts at level {level} ({finding.code if finding.code in settings.alerts.start_level else finding.category})"
    history = json.dumps([_history_entry(now, "raised", f"{redact(finding.title)}; {started}", level)])
    values = dict(uid=new_uid, dedup_key=key, open_key=key, source=source, title=redact(finding.title)[:500],
                  category=finding.category, severity=finding.severity, code=finding.code, scope=finding.scope,
                  host=host, status="firing", level=level, first_seen=now, last_seen=now, level_since=now,
                  occurrences=1, flaps=0, reminders=0, ack_reminders=0, evidence=evidence, history=history, version=0)
    insert = _insert(state, alerts).values(**values)
    statement = insert.on_conflict_do_update(
        index_elements=["open_key"],
        set_={"last_seen": insert.excluded.last_seen, "occurrences": alerts.c.occurrences + 1,
              "title": insert.excluded.title, "severity": insert.excluded.severity,
              "evidence": insert.excluded.evidence, "version": alerts.c.version + 1},
    ).returning(*alerts.c)
    created: list[Any] = []
    with state.begin() as connection:
        row = connection.execute(statement).first()
        alert = _alert(row)
        if alert.uid == new_uid:
            logger.warning("alert #{} raised: [{}] {} ({}) key {}", alert.id, alert.severity, alert.title, alert.code, key)
            suppressed = _silenced(settings, state, alert, now, connection)
            targets = recipients_of_level(settings, alert.category, level)
            created = _enqueue(connection, state, settings, alert, f"level:{level}", level, targets, now, suppressed,
                               claim=True)
            if not suppressed and targets:
                connection.execute(alerts.update().where(alerts.c.id == alert.id).values(last_notified_at=now))
        elif alert.status == "resolved":
            # seen again within the flap window: the same alert reopens; its clocks decide what is sent
            history_list = alert.history + [_history_entry(now, "reopened", "seen again after recovering (flapping)")]
            connection.execute(alerts.update().where(alerts.c.id == alert.id, alerts.c.status == "resolved").values(
                status="acknowledged" if alert.acked_at else "firing", resolved_at=None, resolved_by=None,
                flaps=alert.flaps + 1, history=json.dumps(history_list), version=alerts.c.version + 1))
            logger.warning("alert #{} reopened (flapping): {}", alert.id, alert.title)
    return created


def _recover(settings, state: StateStore, key: str, now: datetime, *, by: str) -> None:
    with state.connect() as connection:
        row = connection.execute(select(alerts).where(alerts.c.open_key == key,
                                                      alerts.c.status.in_(OPEN_STATUSES))).first()
    if row is None:
        return
    alert = _alert(row)
    with state.begin() as connection:
        history_list = alert.history + [_history_entry(now, "recovered", by)]
        changed = connection.execute(alerts.update().where(alerts.c.id == alert.id, alerts.c.version == alert.version)
                                     .values(status="resolved", resolved_at=now, resolved_by=by,
                                             history=json.dumps(history_list), version=alerts.c.version + 1)).rowcount
    if changed:
        logger.success("alert #{} recovered: {}", alert.id, alert.title)
        if settings.alerts.flap_window <= 0:
            _close(settings, state, alert.id, now)


def _close(settings, state: StateStore, alert_id: int, now: datetime, *, dispatch: bool = True) -> list[Any]:
    """Close a resolved alert: drop its pending pages and queue a resolved notice to everyone who was
    notified (sent at once with dispatch, else by the next process()). Return the new outbox rows."""
    created: list[Any] = []
    with state.begin() as connection:
        closed = connection.execute(alerts.update().where(alerts.c.id == alert_id, alerts.c.open_key.is_not(None))
                                    .values(open_key=None, closed_at=now, version=alerts.c.version + 1)).rowcount
        if closed != 1:
            return []
        connection.execute(notifications.update().where(notifications.c.alert_id == alert_id,
                                                        notifications.c.status == "pending",
                                                        notifications.c.event != "resolved")
                           .values(status="obsolete", last_error="the alert was resolved before this was delivered"))
        row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        alert = _alert(row)
        notified = [target for (target,) in connection.execute(
            select(notifications.c.target).where(notifications.c.alert_id == alert_id, notifications.c.status == "sent",
                                                 notifications.c.event != "resolved")
            .group_by(notifications.c.target).order_by(notifications.c.target)).all()]
        if notified:
            created = _enqueue(connection, state, settings, alert, "resolved", alert.level, notified, now,
                               _silenced(settings, state, alert, now, connection), claim=dispatch)
    if dispatch and created:
        _dispatch(settings, state, now, claimed=created)
    return created


def acknowledge(settings, state: StateStore, alert_id: int, *, by: str | None = None,
                now: datetime | None = None) -> Alert:
    """Acknowledge an alert: escalation stops (reminders only after alerts.ack_timeout). Raise
    UsageError if there is no such open alert."""
    from scheduler.errors import UsageError

    now = now or _utcnow()
    alert = get_alert(state, alert_id)
    if alert is None:
        raise UsageError(f"there is no alert #{alert_id}; see `jackpot-maint alerts list --all`")
    if alert.status != "firing":
        raise UsageError(f"alert #{alert_id} is {alert.status}, not firing: nothing to acknowledge")
    by = by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
    history_list = alert.history + [_history_entry(now, "acknowledged", f"by {by}", alert.level)]
    with state.begin() as connection:
        connection.execute(alerts.update().where(alerts.c.id == alert_id, alerts.c.status == "firing").values(
            status="acknowledged", acked_at=now, acked_by=by, history=json.dumps(history_list),
            version=alerts.c.version + 1))
    logger.info("alert #{} acknowledged by {}", alert_id, by)
    return get_alert(state, alert_id)  # type: ignore[return-value]


def resolve(settings, state: StateStore, alert_id: int, *, by: str | None = None,
            now: datetime | None = None) -> Alert:
    """Resolve an alert by hand: everyone who was notified gets a resolved notice now. Raise
    UsageError if there is no such open alert."""
    from scheduler.errors import UsageError

    now = now or _utcnow()
    alert = get_alert(state, alert_id)
    if alert is None:
        raise UsageError(f"there is no alert #{alert_id}; see `jackpot-maint alerts list --all`")
    if not alert.open:
        raise UsageError(f"alert #{alert_id} is already resolved and closed")
    by = by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
    if alert.status != "resolved":
        history_list = alert.history + [_history_entry(now, "resolved", f"by {by}", alert.level)]
        with state.begin() as connection:
            connection.execute(alerts.update().where(alerts.c.id == alert_id).values(
                status="resolved", resolved_at=now, resolved_by=by, history=json.dumps(history_list),
                version=alerts.c.version + 1))
    _close(settings, state, alert_id, now)
    return get_alert(state, alert_id)  # type: ignore[return-value]


# ---- the clocks ----------------------------------------------------------------------------------


def _step(settings, state: StateStore, alert: Alert, now: datetime) -> list[Any]:
    """Apply the clocks to one open alert. Return new outbox rows to send."""
    config = settings.alerts
    if alert.status == "resolved":
        if alert.resolved_at is not None and (now - alert.resolved_at).total_seconds() >= config.flap_window:
            return _close(settings, state, alert.id, now, dispatch=False)
        return []
    suppressed = _silenced(settings, state, alert, now)
    created: list[Any] = []
    with state.begin() as connection:
        if alert.status == "firing":
            level, reasons = next_level(settings, alert, now)
            if level > alert.level:
                history_list = alert.history + [_history_entry(now, "escalated", reason, number) for number, reason
                                                in zip(range(alert.level + 1, level + 1), reasons)]
                updates: dict[str, Any] = dict(level=level, level_since=now, history=json.dumps(history_list),
                                               version=alerts.c.version + 1)
                targets = recipients_of_level(settings, alert.category, level)
                if not suppressed and targets:
                    updates["last_notified_at"] = now
                won = connection.execute(alerts.update().where(alerts.c.id == alert.id, alerts.c.version == alert.version)
                                         .values(**updates)).rowcount
                if won:
                    alert.level, alert.history = level, history_list
                    logger.warning("alert #{} escalated to level {}: {}", alert.id, level, "; ".join(reasons))
                    created = _enqueue(connection, state, settings, alert, f"level:{level}", level, targets, now, suppressed)
                return created
            due = alert.last_notified_at is None or (now - alert.last_notified_at).total_seconds() >= config.repeat_interval
            if due and not suppressed:
                targets = recipients_of_level(settings, alert.category, alert.level)
                if not targets:
                    return []
                number = alert.reminders + 1
                won = connection.execute(alerts.update().where(alerts.c.id == alert.id, alerts.c.version == alert.version)
                                         .values(reminders=number, last_notified_at=now,
                                                 version=alerts.c.version + 1)).rowcount
                if won:
                    created = _enqueue(connection, state, settings, alert, f"reminder:{number}", alert.level, targets,
                                       now, None)
        elif alert.status == "acknowledged" and config.ack_timeout and not suppressed:
            since = alert.last_ack_reminder_at or alert.acked_at or now
            if (now - since).total_seconds() >= config.ack_timeout:
                targets = recipients_of_level(settings, alert.category, alert.level)
                number = alert.ack_reminders + 1
                won = connection.execute(alerts.update().where(alerts.c.id == alert.id, alerts.c.version == alert.version)
                                         .values(ack_reminders=number, last_ack_reminder_at=now,
                                                 version=alerts.c.version + 1)).rowcount
                if won and targets:
                    created = _enqueue(connection, state, settings, alert, f"ack-reminder:{number}", alert.level,
                                       targets, now, None)
    return created


_last_prune = 0.0


def process(settings, state: StateStore, now: datetime | None = None) -> None:
    """Escalate, remind, close recovered alerts after the flap window, and send or retry what is due.
    The daemon calls this every scheduler.alerts_interval; `now` is injectable for tests."""
    global _last_prune
    if not settings.alerts.enabled:
        return
    now = now or _utcnow()
    # builds (and caches) the notifier targets, importing apprise (~0.5 s) here, on the daemon's first
    # loop, rather than on the path from a detected problem to its first page
    configured_targets(settings)
    _recover_stale_sends(settings, state, now)
    with state.connect() as connection:
        rows = connection.execute(select(alerts).where(alerts.c.open_key.is_not(None)).order_by(alerts.c.id)).all()
    for row in rows:
        try:
            _step(settings, state, _alert(row), now)
        except Exception as error:  # noqa: BLE001 - one alert's trouble must not stop the others
            logger.error("alert #{}: processing failed: {}", row.id, redact(str(error)))
    _dispatch(settings, state, now)
    if time.monotonic() - _last_prune > 3600:
        _last_prune = time.monotonic()
        prune(state, settings.state.retention_days, now=now)


def prune(state: StateStore, retention_days: int, *, now: datetime | None = None) -> int:
    """Delete closed alerts (and their notifications) older than the retention. Return how many."""
    cutoff = (now or _utcnow()) - timedelta(days=retention_days)
    with state.begin() as connection:
        old = [row[0] for row in connection.execute(select(alerts.c.id).where(
            alerts.c.open_key.is_(None), alerts.c.closed_at < cutoff)).all()]
        if old:
            connection.execute(notifications.delete().where(notifications.c.alert_id.in_(old)))
            connection.execute(alerts.delete().where(alerts.c.id.in_(old)))
    return len(old)


# ---- runs ----------------------------------------------------------------------------------------


def category_for_code(code: str, scope: str) -> str:
    """The category of a failed job by its error code."""
    if code == "J001":
        return "service_down" if scope == "database" else "infrastructure"
    return {"J006": "performance", "J007": "infrastructure", "J003": "data_corruption", "J002": "data_corruption",
            "J004": "configuration"}.get(code, "maintenance")


def on_run_finished(settings, state: StateStore, record, result, error, *, now: datetime | None = None) -> None:
    """After every run: a failed run raises the job's alert, a later good run resolves it; repeated
    skipped or missed runs raise their own; each of the result's findings is reported."""
    if not settings.alerts.enabled:
        return
    from jobs.base import Finding
    from scheduler import ledger

    now = now or _utcnow()
    try:
        from jobs.registry import get_job

        scope = getattr(get_job(record.job), "SCOPE", "database")
    except Exception:  # noqa: BLE001 - e.g. a job removed from the configuration
        scope = "database"
    key = f"job:{record.job}"
    not_running_key = f"job:{record.job}:not-running"
    status = record.status
    if status in ("skipped", "missed"):
        recent = ledger.list_runs(state, job=record.job, limit=settings.alerts.skip_alert_after)
        if len(recent) >= settings.alerts.skip_alert_after and all(run.status in ("skipped", "missed") for run in recent):
            skipped = status == "skipped"
            report(settings, state, Finding(
                key=not_running_key, ok=False, scope=scope, category="maintenance", severity="P3",
                code="J006" if skipped else "J005",
                title=(f"{record.job} skipped {len(recent)} times in a row (the previous run is still running)" if skipped
                       else f"{record.job} missed {len(recent)} scheduled runs in a row"),
                symptoms=[f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC {run.status}: {run.message or ''}" for run in recent],
                attempts=["the scheduler tried each scheduled fire"],
                details={"job": record.job}), source=record.job, now=now)
        return
    if status in ("cancelled", "running"):
        return
    if status == "failed" and error is not None:
        code = getattr(error, "code", "J005") or "J005"
        category = category_for_code(code, scope)
        failures = 0
        since = record.started_at
        for run in ledger.list_runs(state, job=record.job, limit=50):
            if run.status != "failed":
                break
            failures += 1
            since = run.started_at
        message = redact(getattr(error, "message", None) or str(error))
        duration = record.duration_seconds
        symptoms = [f"run {record.id[:8]} ({record.trigger}) failed"
                    + (f" after {duration:.1f}s" if duration is not None else "") + f" with {getattr(error, 'codes', code)}",
                    f"{failures} failed run(s) in a row since {since:%Y-%m-%d %H:%M:%S} UTC"]
        attempts = [f"the runner recorded the failure; {record.job} runs again at its next scheduled time"]
        hint = getattr(error, "hint", None)
        report(settings, state, Finding(
            key=key, ok=False, scope=scope, category=category, severity=JOB_SEVERITY.get(category, "P3"), code=code,
            # the first clause names what failed; the whole message is in LOGS
            title=f"{record.job} failed: {message.splitlines()[0].split(': ')[0][:120] if message else 'no message'}",
            symptoms=symptoms, attempts=attempts, logs=message.splitlines()[:10],
            details={"job": record.job, "run_id": record.id, "db_code": getattr(error, "db_code", None),
                     **({"hint": redact(hint)} if hint else {})}),
            source=record.job, now=now)
    elif status in ("ok", "problems", "skipped"):
        report(settings, state, Finding(key=key, ok=True, title=f"{record.job} succeeded", scope=scope),
               source=record.job, now=now)
        report(settings, state, Finding(key=not_running_key, ok=True, title=f"{record.job} ran", scope=scope),
               source=record.job, now=now)
    for finding in (result.findings if result is not None else []):
        try:
            report(settings, state, finding, source=record.job, now=now)
        except Exception as failure:  # noqa: BLE001 - one finding's trouble must not hide the others
            logger.error("alert for finding {} of {} failed: {}", finding.key, record.job, redact(str(failure)))


# ---- test messages -------------------------------------------------------------------------------
