"""The shape every job has.

A job module exposes:
    NAME: str                       its name, spelled the same in config, CLI, history and metrics
    SCOPE: "database" | "host"      database jobs run once across hosts; host jobs on every host
    DESCRIPTION: str                one line for `jobs list`
    Options: type[JobOptions]       its `jobs.<NAME>` config section
    run(context: JobContext) -> JobResult
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from config.types import Duration, Schedule

if TYPE_CHECKING:
    import sqlalchemy

    from config.settings import Settings
    from scheduler.state import StateStore

Status = Literal["ok", "problems", "failed", "skipped", "cancelled"]
Severity = Literal["P1", "P2", "P3", "P4"]
Category = Literal["service_down", "data_corruption", "performance", "security", "infrastructure",
                   "configuration", "maintenance"]


class JobOptions(BaseModel):
    """Options every job has. A job's own Options subclasses this and sets its defaults."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = True
    schedule: Schedule = "0 * * * *"
    timeout: Duration = 3600.0
    # How late a missed fire may still be caught up (once) after downtime; None = sized to the schedule.
    misfire_grace: Duration | None = None


@dataclass
class Finding:
    """Something a job saw that people may need to know about; the alerting layer turns these into
    alerts (ok=False raises or updates, ok=True resolves the alert with the same key).

    key: stable identifier of the problem within the job, e.g. "rule:current_amount_negative".
    scope: "database" problems are shared by all hosts (one alert); "host" problems are per host.
    """

    key: str
    ok: bool
    title: str
    category: Category = "maintenance"
    severity: Severity = "P3"
    code: str = "J005"
    scope: Literal["database", "host"] = "database"
    symptoms: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "ok": self.ok, "title": self.title, "category": self.category,
            "severity": self.severity, "code": self.code, "scope": self.scope, "symptoms": self.symptoms,
            "attempts": self.attempts, "logs": self.logs, "details": self.details,
        }


@dataclass
class JobResult:
    """What a run produced: a status, summary counts for history/metrics, and findings for alerts."""

    status: Status = "ok"
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    findings: list[Finding] = field(default_factory=list)
    error_code: str | None = None


class Cancelled(Exception):
    """Raised by JobContext.check_cancelled() when the run was asked to stop."""


@dataclass
class JobContext:
    """Everything a job gets: settings, its options, the target database, the state store, a logger."""

    settings: "Settings"
    options: JobOptions
    run_id: str
    job: str
    trigger: str = "manual"
    dry_run: bool = False
    host: str = ""
    logger: Any = None
    state: "StateStore | None" = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[str], None] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    _engine: "sqlalchemy.Engine | None" = None
    # pids of the job's database backends, so a timeout can cancel its queries in PostgreSQL
    backend_pids: set[int] = field(default_factory=set)
    started_monotonic: float = field(default_factory=time.monotonic)

    @property
    def engine(self) -> "sqlalchemy.Engine":
        """The target database engine (one per run, created on first use)."""
        if self._engine is None:
            from scheduler.db import create_target_engine

            self._engine = create_target_engine(self.settings, job=self.job, on_connect=self.backend_pids.add)
        return self._engine

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise Cancelled if the run was asked to stop: call it between batches."""
        if self.cancel_event.is_set():
            raise Cancelled(f"{self.job} was cancelled")

    def report(self, message: str) -> None:
        """Progress for long manual runs (printed by the CLI on a terminal) and the log."""
        if self.logger is not None:
            self.logger.info(message)
        if self.progress is not None:
            self.progress(message)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
