"""The [alerts] section and [notifiers.<name>] targets: who is told what, and when.

Defaults follow the guide's "Contact and Escalation" section. A *notifier* is a named target
(apprise URLs, a file, a command, or a plugin); a *contact* is a named set of notifiers with a
response time; each category of problem routes to one contact; each escalation *level* has its own
recipients (contacts, notifiers, or `contact`, meaning the alert's own contact).

Contacts, routes, levels and start levels given in the file are merged over the defaults key by
key, so `[alerts.contacts.oncall] targets = ["pager"]` keeps the on-call response time of 15 min.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from config.types import Duration

CATEGORIES = ("service_down", "data_corruption", "performance", "security", "infrastructure",
              "configuration", "maintenance")
BUILTIN_NOTIFIER_TYPES = ("apprise", "file", "command")
ENTRY_POINT_GROUP = "jackpot_maint.notifiers"

# The guide's emergency contacts, plus who level 2-4 escalate to. Each contact's targets default to
# the notifier of the same name: configure [notifiers.oncall] and the on-call engineer gets pages.
DEFAULT_CONTACTS: dict[str, dict[str, Any]] = {
    "oncall": {"description": "On-call engineer", "targets": ["oncall"], "response_time": "15m"},
    "database-team": {"description": "Database team", "targets": ["database-team"], "response_time": "30m"},
    "devops-team": {"description": "DevOps team", "targets": ["devops-team"], "response_time": "1h"},
    "security-team": {"description": "Security team", "targets": ["security-team"], "response_time": "1h"},
    "platform-team": {"description": "Platform team", "targets": ["platform-team"], "response_time": "2h"},
    "team-lead": {"description": "Team support (level 2)", "targets": ["team-lead"], "response_time": "30m"},
    "engineering": {"description": "Engineering support (level 3)", "targets": ["engineering"], "response_time": "2h"},
    "external": {"description": "External support (level 4)", "targets": ["external"], "response_time": "8h"},
}
DEFAULT_ROUTES: dict[str, str] = {
    "service_down": "oncall", "data_corruption": "database-team", "performance": "devops-team",
    "security": "security-team", "infrastructure": "platform-team",
    # the guide names no contact for these; the devops team runs the maintenance tooling
    "configuration": "devops-team", "maintenance": "devops-team",
}
# The guide's levels: 0-30 min, 30 min-2 h, 2-8 h, 8 h+. Recipients accumulate as the alert climbs.
DEFAULT_LEVELS: dict[str, dict[str, Any]] = {
    "1": {"name": "Self-service", "until": "30m", "recipients": ["contact"]},
    "2": {"name": "Team support", "until": "2h", "recipients": ["contact", "team-lead"]},
    "3": {"name": "Engineering support", "until": "8h", "recipients": ["contact", "team-lead", "engineering"]},
    "4": {"name": "External support", "until": None,
          "recipients": ["contact", "team-lead", "engineering", "external"]},
}
# The guide puts database corruption, data loss and security breaches at level 4, and data
# consistency problems (invalid amounts J003, version conflicts J002) at level 2. An error code wins
# over a category.
DEFAULT_START_LEVELS: dict[str, int] = {"data_corruption": 4, "security": 4, "J003": 2, "J002": 2}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ContactSettings(_Section):
    description: str = Field("", description="Who this is, for messages and `alerts test`")
    targets: list[str] = Field(default_factory=list, description="Notifier names ([notifiers.<name>]) that reach this contact")
    response_time: Duration = Field(3600.0, description="Escalate one level when an alert is not acknowledged within this long")


class LevelSettings(_Section):
    name: str = Field("", description="The level's name in messages, e.g. Team support")
    until: Duration | None = Field(None, description="An alert open longer than this (since first seen) moves up; "
                                   "none for the last level")
    recipients: list[str] = Field(default_factory=list, description="Contact names, notifier names, or `contact` "
                                  "(the alert's own contact by category)")


class MaintenanceWindow(_Section):
    cron: str = Field(..., description="When the window opens: a 5-field cron expression in scheduler.timezone")
    duration: Duration = Field(..., description="How long the window stays open")
    match: str = Field("*", description="Glob over the alert's key, category, code, host or source; * = all")
    reason: str = Field("maintenance window", description="Shown with suppressed notifications")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as error:
            raise ValueError(f"invalid cron expression {value!r}: {error}") from None
        return value


def _merged(defaults: dict[str, Any], value: object) -> object:
    """Merge a user mapping over defaults key by key (and one level down for tables)."""
    if not isinstance(value, dict):
        return value
    merged: dict[str, Any] = {key: (dict(item) if isinstance(item, dict) else item) for key, item in defaults.items()}
    for key, item in value.items():
        key = str(key)
        if isinstance(item, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **item}
        elif isinstance(item, BaseModel):
            merged[key] = item
        else:
            merged[key] = item
    return merged


class AlertsSettings(_Section):
    enabled: bool = Field(True, description="Raise and send alerts (off: nothing is recorded or sent)")
    contacts: dict[str, ContactSettings] = Field(
        default_factory=lambda: dict(DEFAULT_CONTACTS),
        description="Contacts by name: [alerts.contacts.<name>] targets, response_time, description")
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES),
                                   description="Category -> contact name (service_down, data_corruption, performance, "
                                               "security, infrastructure, configuration, maintenance)")
    levels: dict[str, LevelSettings] = Field(default_factory=lambda: dict(DEFAULT_LEVELS),
                                             description="Escalation levels 1..N: [alerts.levels.<n>] name, until, recipients")
    start_level: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_START_LEVELS),
                                        description="Category or error code -> level a new alert starts at (a code wins)")
    repeat_interval: Duration = Field(3600.0, description="Remind the current level this often while firing and "
                                      "unacknowledged")
    ack_timeout: Duration | None = Field(None, description="After an acknowledgement, remind this often until resolved; "
                                         "unset: no reminders once acknowledged")
    flap_window: Duration = Field(600.0, description="A recovered alert seen again within this long reopens (no new page); "
                                  "its resolved notice waits this long")
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list,
                                                         description="Recurring windows whose matching alerts are recorded "
                                                                     "but not sent: [[alerts.maintenance_windows]] cron, "
                                                                     "duration, match, reason")
    send_timeout: Duration = Field(10.0, description="Give up on one target's send after this long (each target has "
                                   "its own; the others are not delayed)")
    retry_backoff: list[Duration] = Field(default_factory=lambda: [30.0, 60.0, 300.0, 900.0],
                                          description="Waits between retries of a failed send; the last repeats")
    retry_for: Duration = Field(86400.0, description="Stop retrying a failed send after this long")
    fallback: str | None = Field(None, description="Notifier used when every target of a level fails, or a level "
                                 "resolves to no configured notifier")
    skip_alert_after: int = Field(3, ge=1, description="Alert when a job's runs were skipped or missed this many "
                                  "times in a row")
    message_max_chars: int = Field(4000, ge=500, description="Longest message body; longer evidence is cut")

    @field_validator("contacts", mode="before")
    @classmethod
    def _merge_contacts(cls, value: object) -> object:
        return _merged(DEFAULT_CONTACTS, value)

    @field_validator("routes", mode="before")
    @classmethod
    def _merge_routes(cls, value: object) -> object:
        return _merged(DEFAULT_ROUTES, value)

    @field_validator("levels", mode="before")
    @classmethod
    def _merge_levels(cls, value: object) -> object:
        return _merged(DEFAULT_LEVELS, value)

    @field_validator("start_level", mode="before")
    @classmethod
    def _merge_start_levels(cls, value: object) -> object:
        return _merged(DEFAULT_START_LEVELS, value)

    @model_validator(mode="after")
    def _consistent(self) -> "AlertsSettings":
        problems = []
        for category, contact in self.routes.items():
            if category not in CATEGORIES:
                problems.append(f"routes: unknown category {category!r}; categories: {', '.join(CATEGORIES)}")
            if contact not in self.contacts:
                problems.append(f"routes.{category}: unknown contact {contact!r}; contacts: {', '.join(self.contacts)}")
        numbers = sorted(self.levels, key=lambda key: int(key) if key.isdigit() else -1)
        if not numbers or numbers != [str(number) for number in range(1, len(numbers) + 1)]:
            problems.append(f"levels: expected levels numbered 1..N, got {', '.join(self.levels) or 'none'}")
        else:
            previous = 0.0
            for number in numbers:
                level = self.levels[number]
                last = number == numbers[-1]
                if not last and level.until is None:
                    problems.append(f"levels.{number}.until: required for every level but the last")
                elif level.until is not None:
                    if level.until <= previous:
                        problems.append(f"levels.{number}.until: must be later than the previous level's")
                    previous = level.until
        for key, level in self.start_level.items():
            if key not in CATEGORIES and not re.fullmatch(r"(J|DB)\d{3}", key):
                problems.append(f"start_level.{key}: not a category ({', '.join(CATEGORIES)}) or an error code (J001, DB006...)")
            if not 1 <= level <= len(self.levels):
                problems.append(f"start_level.{key}: {level} is not a level (1..{len(self.levels)})")
        if not self.retry_backoff:
            problems.append("retry_backoff: give at least one wait, e.g. [\"30s\"]")
        if problems:
            raise ValueError("; ".join(f"alerts.{problem}" for problem in problems))
        return self

    def level_count(self) -> int:
        return len(self.levels)

    def level(self, number: int) -> LevelSettings:
        return self.levels[str(number)]


class NotifierSettings(_Section):
    type: str = Field("apprise", description="apprise, file, command, or the name of a plugin "
                      "(entry point group jackpot_maint.notifiers)")
    description: str = Field("", description="Who or what this reaches, for `alerts test`")
    urls: list[SecretStr] = Field(default_factory=list, description="apprise URLs (secrets: never printed; "
                                  "each URL is its own target); add ?cto=&rto= to set apprise's socket timeouts")
    path: str | None = Field(None, description="file: append one JSON object per notification to this file")
    command: list[str] = Field(default_factory=list, description="command: the program and its arguments; "
                               "the alert is given as JSON on stdin")
    timeout: Duration | None = Field(None, description="This notifier's send timeout; default alerts.send_timeout")
    options: dict[str, Any] = Field(default_factory=dict, description="Options passed to a plugin notifier")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            import shlex

            return shlex.split(value)
        return value

    @model_validator(mode="after")
    def _complete(self) -> "NotifierSettings":
        if self.type == "apprise" and not self.urls:
            raise ValueError("type apprise needs urls = [\"...\"] (e.g. json://host/path, slack://..., mailto://...)")
        if self.type == "file" and not self.path:
            raise ValueError("type file needs path = \"/var/log/jackpot-maint/alerts.jsonl\"")
        if self.type == "command" and not self.command:
            raise ValueError("type command needs command = [\"/usr/local/bin/page\", \"--team\", \"ops\"]")
        if self.type not in BUILTIN_NOTIFIER_TYPES:
            from scheduler.notifiers import plugin_names

            plugins = plugin_names()
            if self.type not in plugins:
                known = ", ".join([*BUILTIN_NOTIFIER_TYPES, *plugins])
                raise ValueError(f"unknown notifier type {self.type!r}; available: {known}")
        return self
