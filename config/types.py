"""Value types shared by every settings section: durations, schedules, identifiers."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """Given 30, 2.5, "500ms", "30s", "10m", "2h" or "1d", return seconds. Raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 10m, 2h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            unit = match.group("unit")
            return float(match.group("number")) * _UNIT_SECONDS[unit.lower() if unit else None]
    raise ValueError(f"expected a duration like 30s, 10m, 2h or a number of seconds, got {value!r}")


def format_duration(seconds: float) -> str:
    """Given seconds, return the shortest exact human form: 0.5 -> '500ms', 600 -> '10m'."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")]

_EVERY = re.compile(r"^\s*every\s+(?P<amount>\d+(?:\.\d+)?\s*(?:ms|s|sec|m|min|h|d|w)?)\s*$", re.IGNORECASE)


def parse_schedule(value: object) -> str:
    """Given a 5-field cron expression or 'every 10m', return it normalised. Raise ValueError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a 5-field cron expression like '30 3 * * *' or an interval like 'every 10m'")
    text = " ".join(value.split())
    match = _EVERY.match(text)
    if match:
        if parse_duration(match.group("amount")) <= 0:
            raise ValueError("an interval must be longer than zero")
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday) or 'every 10m', got {value!r}")
    try:
        # the daemon's own translation: crontab weekdays (0 and 7 = Sunday), not APScheduler 3's (0 = Monday)
        from scheduler.daemon import build_trigger

        build_trigger(text, "UTC")
    except ValueError as error:
        raise ValueError(f"invalid cron expression {value!r}: {error}") from None
    return text


Schedule = Annotated[str, BeforeValidator(parse_schedule)]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def parse_table_name(value: object) -> str:
    """Given 'jackpots' or 'games.jackpots', return it. Reject anything that is not one or two
    plain SQL identifiers, so that a hostile name never reaches SQL."""
    if not isinstance(value, str):
        raise ValueError("expected a table name like 'jackpots' or 'schema.jackpots'")
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise ValueError(
            f"{value!r} is not a valid table name: use letters, digits and underscores, "
            "optionally schema-qualified like 'games.jackpots'"
        )
    return value


TableName = Annotated[str, BeforeValidator(parse_table_name)]
