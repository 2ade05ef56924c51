"""The alert message: the guide's escalation template, filled in automatically and bounded.

ISSUE, SEVERITY, TIMELINE (with the level history), IMPACT, ENVIRONMENT, SYMPTOMS, DATABASE
SNAPSHOT (when the finding carries one), ATTEMPTS MADE, LOGS; and a title like
`[P1][L2] Service down: health endpoint not responding (J001) on host-1`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

from scheduler.escalation import contact_for, format_duration
from scheduler.redact import redact

if TYPE_CHECKING:
    from scheduler.alerts import Alert

CATEGORY_LABELS = {
    "service_down": "Service down", "data_corruption": "Data corruption", "performance": "Performance",
    "security": "Security", "infrastructure": "Infrastructure", "configuration": "Configuration",
    "maintenance": "Maintenance",
}
IMPACT = {
    "service_down": "Players may be unable to see or win jackpots: the service or its database is not answering.",
    "data_corruption": "Jackpot amounts or histories may be wrong; payouts and displays are at risk until fixed.",
    "performance": "Slow responses and timeouts for players; jackpot updates may lag.",
    "security": "Possible unauthorised access or exposure of data; treat as urgent.",
    "infrastructure": "Host resources are strained; the service may degrade or stop.",
    "configuration": "The daemon or the service may run with wrong or outdated settings.",
    "maintenance": "Scheduled maintenance is not happening; tables bloat and history grows until it runs.",
}
# Severity of a failed job by category (a finding brings its own).


def _where(settings, alert: Alert) -> str:
    if alert.scope == "host":
        return alert.host
    try:
        return f"database {settings.database_display()}"
    except Exception:  # noqa: BLE001 - a message must always be buildable
        return alert.host


def alert_title(settings, alert: Alert, level: int, event: str) -> str:
    """`[P1][L2] Service down: health endpoint not responding (J001) on host-1`, with RESOLVED /
    Reminder / Escalated in front of the category for those events."""
    label = CATEGORY_LABELS.get(alert.category, alert.category)
    prefix = ""
    if event == "resolved":
        prefix = "RESOLVED: "
    elif event.startswith("reminder") or event.startswith("ack-reminder"):
        prefix = "Reminder: "
    elif event.startswith("level:") and alert.history and any(entry.get("event") == "escalated" for entry in alert.history):
        prefix = "Escalated: "
    title = f"[{alert.severity}][L{level}] {prefix}{label}: {alert.title} ({alert.code}) on {_where(settings, alert)}"
    return title if len(title) <= 250 else title[:247] + "..."


def _bounded_lines(items: Iterable[Any], limit: int = 12, width: int = 300) -> list[str]:
    lines = []
    items = list(items)
    for item in items[:limit]:
        text = item if isinstance(item, str) else json.dumps(item, default=str)
        text = " ".join(str(text).split())
        lines.append(text if len(text) <= width else text[:width - 3] + "...")
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more")
    return lines


def _flat(value: Any) -> str:
    """A compact one-line form of a snapshot value: key=value pairs, nested in braces."""
    if isinstance(value, dict):
        return ", ".join(f"{key}={{{_flat(item)}}}" if isinstance(item, dict) else f"{key}={_flat(item)}"
                         for key, item in value.items())
    if isinstance(value, list):
        return "; ".join(_flat(item) for item in value)
    return str(value)


def _snapshot_lines(details: dict[str, Any]) -> list[str]:
    """A database snapshot from a finding's details: its `snapshot` (connection counts, longest
    queries...), and a blocking `chain` or the offending `queries` when the check found them."""
    parts: list[tuple[str, Any]] = []
    snapshot = details.get("snapshot")
    if isinstance(snapshot, dict):
        parts.extend(snapshot.items())
    elif snapshot:
        parts.append(("snapshot", snapshot))
    for key, label in (("chain", "blocking chain"), ("queries", "queries"), ("sessions", "sessions")):
        if details.get(key):
            parts.append((label, details[key]))
    lines = []
    for key, value in parts:
        label = key.replace("_", " ")
        if isinstance(value, list):
            lines.append(f"{label}: {len(value)}")
            lines.extend("  " + line for line in _bounded_lines([_flat(item) for item in value], limit=5, width=240))
        else:
            lines.extend(_bounded_lines([f"{label}: {_flat(value)}"], limit=1, width=400))
    return lines


def _environment(settings, alert: Alert) -> str:
    from scheduler import __version__

    parts = [f"host {alert.host}", f"jackpot-maint {__version__}"]
    try:
        parts.append(f"database {settings.database_display()} table {settings.database.table}")
    except Exception:  # noqa: BLE001
        pass
    jobs = getattr(settings, "jobs", None)
    options = getattr(jobs, alert.source, None) if jobs is not None else None
    if options is not None:
        parts.append(f"{alert.source} schedule '{options.schedule}', timeout {options.timeout:g}s")
    try:
        load = os.getloadavg()
        parts.append(f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    try:
        import psutil

        parts.append(f"memory {psutil.virtual_memory().percent:.0f}% used")
    except Exception:  # noqa: BLE001
        pass
    return ", ".join(parts)


def render_message(settings, alert: Alert, event: str, level: int, now: datetime | None = None) -> tuple[str, str]:
    """Given an alert and the event being announced, return (title, body): the guide's escalation
    template filled in, bounded by alerts.message_max_chars."""
    now = now or datetime.now(timezone.utc)
    config = settings.alerts
    contact_name, contact = contact_for(settings, alert.category)
    level_settings = config.level(level)
    evidence = alert.evidence
    from scheduler.errors import APPLICATION_CODES, DATABASE_CODES

    code_meaning = APPLICATION_CODES.get(alert.code) or DATABASE_CODES.get(alert.code) or ""
    title = alert_title(settings, alert, level, event)
    status = {"firing": "FIRING, not acknowledged", "acknowledged": f"ACKNOWLEDGED by {alert.acked_by or 'someone'}",
              "resolved": f"RESOLVED by {alert.resolved_by or 'recovery'}"}.get(alert.status, alert.status)
    lines = [
        f"ISSUE: {CATEGORY_LABELS.get(alert.category, alert.category)}: {alert.title} "
        f"({alert.code}{' ' + code_meaning if code_meaning else ''})",
        f"SEVERITY: {alert.severity}, level {level} of {config.level_count()} ({level_settings.name}); "
        f"contact {contact.description or contact_name} (respond within {format_duration(contact.response_time)}); "
        f"status {status}",
        f"TIMELINE: first seen {alert.first_seen:%Y-%m-%d %H:%M:%S} UTC ({format_duration((now - alert.first_seen).total_seconds())} ago), "
        f"last seen {alert.last_seen:%H:%M:%S} UTC, {alert.occurrences} occurrence(s)"
        + (f", flapped {alert.flaps} time(s)" if alert.flaps else ""),
    ]
    for entry in alert.history[-8:]:
        at = entry.get("at", "")[11:16]
        level_text = f" L{entry['level']}" if "level" in entry else ""
        lines.append(f"  - {at}{level_text} {entry.get('event')}: {entry.get('detail', '')}")
    lines.append(f"IMPACT: {IMPACT.get(alert.category, 'See symptoms.')}")
    lines.append(f"ENVIRONMENT: {_environment(settings, alert)}")
    sections = [
        ("SYMPTOMS", _bounded_lines(evidence.get("symptoms") or ["(none recorded)"])),
        ("DATABASE SNAPSHOT", _snapshot_lines(evidence.get("details") or {})),
        ("ATTEMPTS MADE", _bounded_lines(evidence.get("attempts") or ["none by the daemon"])),
        ("NEXT STEP (the guide's resolution)", _bounded_lines([(evidence.get("details") or {}).get("hint")]
                                                               if (evidence.get("details") or {}).get("hint") else [])),
        ("LOGS", _bounded_lines(evidence.get("logs") or ["(no log lines captured)"], limit=10)),
    ]
    for name, items in sections:
        if not items:
            continue
        lines.append("")
        lines.append(f"{name}:")
        prefix = "" if name == "LOGS" else "- "
        lines.extend(prefix + item for item in items)
    lines.append("")
    lines.append(f"ALERT #{alert.id} key {alert.dedup_key} from {alert.source}. "
                 f"Acknowledge: jackpot-maint alerts ack {alert.id} --by NAME")
    body = redact("\n".join(lines))
    limit = config.message_max_chars
    if len(body) > limit:
        footer = "\n... (cut to alerts.message_max_chars; `jackpot-maint alerts show " + str(alert.id) + "` has it all)"
        body = body[:limit - len(footer)] + footer
    return redact(title), body


def message_kind(event: str, severity: str) -> str:
    if event == "resolved":
        return "success"
    return "failure" if severity in ("P1", "P2") else "warning"

