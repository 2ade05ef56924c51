"""Routing and escalation: who an alert goes to, and when it moves up a level.

A category routes to a contact (a named set of notifiers with a response time); each level has its
recipients; an alert starts at level 1, or higher for its error code or category, and moves up when
it has been open past its level's bound or its contact has not acknowledged it within the response
time. Defaults and their meaning: config/alerting.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from scheduler.redact import redact

if TYPE_CHECKING:
    from scheduler.alerts import Alert


def format_duration(seconds: float) -> str:
    """Given seconds, return a short human duration: 45s, 15m, 2h 30m, 1d 4h."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def contact_for(settings, category: str) -> tuple[str, Any]:
    """Given a category, return (contact name, ContactSettings) it routes to."""
    config = settings.alerts
    name = config.routes.get(category) or config.routes.get("maintenance") or next(iter(config.contacts))
    return name, config.contacts[name]


def start_level(settings, category: str, code: str) -> int:
    """The level a new alert starts at: by error code, else by category, else 1."""
    overrides = settings.alerts.start_level
    return overrides.get(code) or overrides.get(category) or 1


_targets_cache: dict[int, tuple[Any, dict[str, Any], list[str]]] = {}
_targets_lock = threading.Lock()


def configured_targets(settings) -> tuple[dict[str, Any], list[str]]:
    """Return ({target id: Target}, [problems]) for every configured notifier. A notifier that cannot
    be built (unknown plugin, bad URL) is left out and named in problems."""
    from scheduler.notifiers import build_targets

    key = id(settings)
    with _targets_lock:
        cached = _targets_cache.get(key)
        if cached is not None and cached[0] is settings:
            return cached[1], cached[2]
    targets: dict[str, Any] = {}
    problems: list[str] = []
    for name, notifier in settings.notifiers.items():
        try:
            for target in build_targets(name, notifier, settings.alerts.send_timeout):
                targets[target.id] = target
        except Exception as error:  # noqa: BLE001 - one bad notifier must not silence the others
            message = getattr(error, "message", None) or str(error)
            problems.append(f"notifiers.{name}: {redact(message)}")
            logger.error("notifier {} unusable: {}", name, redact(message))
    with _targets_lock:
        if len(_targets_cache) > 4:
            _targets_cache.clear()
        _targets_cache[key] = (settings, targets, problems)
    return targets, problems


def notifier_target_ids(settings, notifier_name: str) -> list[str]:
    """Given a notifier's name, return its target ids (`oncall`, or `oncall#1`, `oncall#2`... for an
    apprise notifier with several URLs); none when it is not configured."""
    targets, _ = configured_targets(settings)
    return [target_id for target_id in targets if target_id == notifier_name or target_id.startswith(notifier_name + "#")]


def recipients_of_level(settings, category: str, level: int) -> list[str]:
    """The target ids a level's recipients resolve to for an alert of this category, in order.
    Falls back to alerts.fallback when nothing configured is reached."""
    config = settings.alerts
    contact_name, _ = contact_for(settings, category)
    names: list[str] = []
    for recipient in config.level(level).recipients:
        recipient = contact_name if recipient == "contact" else recipient
        if recipient in config.contacts:
            names.extend(config.contacts[recipient].targets)
        else:
            names.append(recipient)
    result: list[str] = []
    for name in names:
        for target_id in notifier_target_ids(settings, name):
            if target_id not in result:
                result.append(target_id)
    if not result and config.fallback:
        result = notifier_target_ids(settings, config.fallback)
    return result


def next_level(settings, alert: Alert, now: datetime) -> tuple[int, list[str]]:
    """Given a firing alert and the time, return the level it should be at and the reason for each
    move up: past its level's bound (since first seen), or not acknowledged within its contact's
    response time since it reached its level. Several bounds passed at once (after downtime) climb
    several levels in one step."""
    config = settings.alerts
    _, contact = contact_for(settings, alert.category)
    level, since, reasons = alert.level, alert.level_since, []
    while level < config.level_count():
        bound = config.level(level).until
        if bound is not None and (now - alert.first_seen).total_seconds() >= bound:
            reason = f"open longer than {format_duration(bound)}"
        elif (now - since).total_seconds() >= contact.response_time:
            reason = f"not acknowledged within {format_duration(contact.response_time)}"
        else:
            break
        level += 1
        since = now
        reasons.append(reason)
    return level, reasons


# ---- test messages -------------------------------------------------------------------------------


@dataclass
class TargetCheck:
    target: str
    display: str
    ok: bool
    seconds: float
    error: str | None = None
    reached_by: list[str] = field(default_factory=list)


def send_test(settings, *, contact: str | None = None, level: int | None = None) -> tuple[list[TargetCheck], list[str]]:
    """Send a test message through each configured target (or those of a contact or a level),
    concurrently. Return (results, configuration problems)."""
    from scheduler import __version__
    from scheduler.errors import UsageError
    from scheduler.notifiers import Message, NotifyFailed

    config = settings.alerts
    targets, problems = configured_targets(settings)
    chosen: dict[str, list[str]] = {}
    if contact is not None:
        if contact not in config.contacts:
            raise UsageError(f"unknown contact {contact!r}. Contacts: {', '.join(config.contacts)}")
        for name in config.contacts[contact].targets:
            ids = notifier_target_ids(settings, name)
            if not ids:
                problems.append(f"contact {contact}: notifier {name!r} is not configured ([notifiers.{name}])")
            for target_id in ids:
                chosen.setdefault(target_id, []).append(f"contact {contact}")
    if level is not None:
        if str(level) not in config.levels:
            raise UsageError(f"unknown level {level}. Levels: {', '.join(config.levels)}")
        categories = [category for category in config.routes]
        for category in categories:
            for target_id in recipients_of_level(settings, category, level):
                chosen.setdefault(target_id, []).append(f"level {level} ({category})")
    if contact is None and level is None:
        chosen = {target_id: [] for target_id in targets}
        for category in config.routes:
            for number in range(1, config.level_count() + 1):
                for target_id in recipients_of_level(settings, category, number):
                    if target_id in chosen and f"level {number}" not in chosen[target_id]:
                        chosen[target_id].append(f"level {number}")
    from scheduler.ledger import hostname

    host = hostname()
    results: dict[str, TargetCheck] = {}

    def send_one(target_id: str) -> None:
        target = targets[target_id]
        message = Message(title=f"[TEST] jackpot-maint on {host}: test notification",
                          body=f"This is a test from jackpot-maint {__version__} on {host} through {target.display}. "
                               f"No action needed.", kind="info", data={"test": True, "target": target_id, "host": host})
        started = time.monotonic()
        try:
            target.send(message, target.timeout or config.send_timeout)
            results[target_id] = TargetCheck(target_id, target.display, True, time.monotonic() - started)
        except NotifyFailed as failure:
            results[target_id] = TargetCheck(target_id, target.display, False, time.monotonic() - started,
                                            redact(str(failure)))
        except Exception as failure:  # noqa: BLE001
            results[target_id] = TargetCheck(target_id, target.display, False, time.monotonic() - started,
                                            redact(f"{type(failure).__name__}: {failure}"))

    threads = [threading.Thread(target=send_one, args=(target_id,), daemon=True) for target_id in chosen]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + max([targets[t].timeout or config.send_timeout for t in chosen] or [0]) + 1.0
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    ordered = []
    for target_id, reached_by in chosen.items():
        result = results.get(target_id) or TargetCheck(target_id, targets[target_id].display, False,
                                                      config.send_timeout, "did not finish within the send timeout")
        result.reached_by = reached_by
        ordered.append(result)
    return ordered, problems

