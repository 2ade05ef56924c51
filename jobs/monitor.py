"""monitor: the guide's health checks, every cycle, with thresholds, hysteresis, recovery and
opt-in remediation.

Each cycle runs every check at once (jobs/checks/: host, endpoints, process, log, database), each
in its own thread with its own timeout. A check raises its alert only after failing `for_cycles`
consecutive cycles and clears it after `recover_cycles` good ones; the counters live in the state
store (one record per host), since every cycle runs in a fresh context. The job runs on every host
(SCOPE "host"); findings about the shared database carry scope "database" so alerting pages once
for them however many hosts see them.

Remediation is off unless enabled, one action at a time: terminate long queries matching a pattern
(never the daemon's own, never autovacuum or replication) and run a restart command after N
consecutive failed health checks, at most M times an hour. Every action is recorded in the run
summary and in the finding's attempts.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from config.types import Duration, Schedule
from jobs.base import Finding, JobContext, JobOptions, JobResult
from jobs.checks import CheckContext, CheckResult, info_for, run_probes, section_for, worst
from scheduler.redact import redact

NAME = "monitor"
SCOPE = "host"
DESCRIPTION = ("Health checks with thresholds and hysteresis: host CPU/memory/disk, service endpoints, process, "
               "log errors, database (connections, long queries, locks, bloat, wraparound)")

HYSTERESIS_KEY = "hysteresis"
RESTARTS_KEY = "restarts"
ATTEMPTS_KEPT = 10


class CheckSection(BaseModel):
    """A check's switch and its own hysteresis."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="Run this check")
    for_cycles: Optional[int] = Field(None, ge=1, description="Failing cycles in a row before the alert is raised "
                                      "(default jobs.monitor.for_cycles)")
    recover_cycles: Optional[int] = Field(None, ge=1, description="Good cycles in a row before the alert clears "
                                          "(default jobs.monitor.recover_cycles)")


class Threshold(CheckSection):
    warning: Optional[float] = None
    critical: Optional[float] = None


def _threshold(model_name: str, *, measured: str, unit: str, warning: float | str | None, critical: float | str | None,
               duration: bool = False, lower_is_worse: bool = False, for_cycles: int | None = None,
               **extra: tuple[Any, Any]) -> type[Threshold]:
    """Build a check section with its own defaults (a partial TOML table keeps the other defaults)."""
    kind = Optional[Duration] if duration else Optional[float]
    side = "below" if lower_is_worse else "above"
    fields: dict[str, Any] = {
        "warning": (kind, Field(warning, description=f"Warning when {measured} is {side} this{unit}; empty: never")),
        "critical": (kind, Field(critical, description=f"Critical when {measured} is {side} this{unit}; empty: never")),
    }
    if for_cycles is not None:
        fields["for_cycles"] = (Optional[int], Field(for_cycles, ge=1, description="Failing cycles in a row before "
                                                     "the alert is raised"))
    fields.update(extra)
    return create_model(model_name, __base__=Threshold, **fields)


CpuCheck = _threshold("CpuCheck", measured="CPU busy", unit=" (%)", warning=80.0, critical=95.0, for_cycles=3)
MemoryCheck = _threshold("MemoryCheck", measured="memory in use", unit=" (%)", warning=85.0, critical=95.0)
DiskCheck = _threshold("DiskCheck", measured="a mount point's usage", unit=" (%)", warning=90.0, critical=95.0)
ResponseTimeCheck = _threshold("ResponseTimeCheck", measured="an endpoint's response time", unit="",
                               warning="500ms", critical="2s", duration=True)
ErrorRateCheck = _threshold("ErrorRateCheck", measured="the metrics' error_rate", unit=" (%)", warning=None, critical=1.0)
ProcessMemoryCheck = _threshold("ProcessMemoryCheck", measured="the service's resident memory", unit=" (MB)",
                                warning=1024.0, critical=1536.0)
MemoryGrowthCheck = _threshold(
    "MemoryGrowthCheck", measured="the service's memory growth", unit=" (MB per hour)", warning=50.0, critical=200.0,
    window=(int, Field(12, ge=3, description="Samples (one per cycle) the slope is fitted over")),
    min_samples=(int, Field(6, ge=3, description="Samples needed before growth is judged")),
    min_span=(Duration, Field(1200.0, description="Time the samples must span before growth is judged (manual "
                              "runs seconds apart would extrapolate noise)")),
    min_fit=(float, Field(0.9, ge=0, le=1, description="Correlation the samples need with a rising line to count as "
                          "sustained growth (one high reading is not a leak)")))
LogErrorsCheck = _threshold(
    "LogErrorsCheck", measured="the number of ERROR lines since the last cycle", unit="", warning=0.0, critical=50.0,
    pattern=(str, Field(r"\bERROR\b", description="Regular expression of an error line")),
    tail_lines=(int, Field(100, ge=1, description="diagnose: how many last lines to look at (the guide's tail -100)")))
DatabaseResponseCheck = _threshold("DatabaseResponseCheck", measured="connect + SELECT 1 time", unit="",
                                   warning="1s", critical="5s", duration=True)
ConnectionsCheck = _threshold("ConnectionsCheck", measured="connections in use", unit=" (% of max_connections)",
                              warning=80.0, critical=95.0)
ServiceConnectionsCheck = _threshold("ServiceConnectionsCheck", measured="the service's own connections", unit=" (count)",
                                     warning=None, critical=None)
LongQueriesCheck = _threshold("LongQueriesCheck", measured="the longest active query", unit="", warning="5m",
                              critical="15m", duration=True)
IdleInTransactionCheck = _threshold("IdleInTransactionCheck", measured="the oldest transaction left idle", unit="",
                                    warning="1m", critical="10m", duration=True)
BlockingCheck = _threshold("BlockingCheck", measured="the longest wait for another session's lock", unit="",
                           warning="30s", critical="2m", duration=True)
DeadTuplesCheck = _threshold(
    "DeadTuplesCheck", measured="the jackpots table's dead-tuple ratio", unit=" (%)", warning=20.0, critical=50.0,
    min_dead_rows=(int, Field(1000, ge=0, description="Ignore the ratio below this many dead rows (small tables)")))
WraparoundCheck = _threshold("WraparoundCheck", measured="the oldest transaction ID age", unit=" (wraparound at 2^31)",
                             warning=1_000_000_000.0, critical=1_500_000_000.0)
CacheHitCheck = _threshold(
    "CacheHitCheck", measured="the cache hit ratio", unit=" (%)", warning=95.0, critical=90.0, lower_is_worse=True,
    min_blocks=(int, Field(10_000, ge=0, description="Judge the ratio only after this many block reads")))
DeadlocksCheck = _threshold("DeadlocksCheck", measured="deadlocks since the last cycle", unit="", warning=0.0,
                            critical=5.0)


class TerminateQueries(BaseModel):
    """Remediation: the guide's "kill long-running queries"."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="Terminate matching queries (off by default)")
    older_than: Duration = Field(600.0, description="Only queries active longer than this")
    pattern: str = Field(".", description="PostgreSQL regular expression (case-insensitive) the query text must match")


class RestartService(BaseModel):
    """Remediation: restart the service after repeated failed health checks."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="Run the command (off by default)")
    command: str = Field("systemctl restart jackpot-service", description="Command to run (split like a shell would, "
                         "run without one)")
    after_failures: int = Field(3, ge=1, description="Consecutive failed health checks before a restart")
    max_per_hour: int = Field(2, ge=1, description="At most this many restarts in any hour")
    timeout: Duration = Field(60.0, description="Give up on the command after this long")


class Options(JobOptions):
    schedule: Schedule = Field("every 5m", description="When the checks run")
    timeout: Duration = Field(120.0, description="Cancel a cycle that takes longer")
    for_cycles: int = Field(2, ge=1, description="Failing cycles in a row before a check's alert is raised")
    recover_cycles: int = Field(2, ge=1, description="Good cycles in a row before a check's alert clears")
    check_timeout: Duration = Field(10.0, description="Each host/process/log check gives up after this long "
                                    "(endpoints use service.request_timeout)")
    cpu_sample: Duration = Field(0.25, description="How long CPU usage is sampled")
    database_statement_timeout: Duration = Field(5.0, description="statement_timeout of the monitor's database queries")
    cpu: CpuCheck = Field(default_factory=CpuCheck, description="Host CPU busy %")
    memory: MemoryCheck = Field(default_factory=MemoryCheck, description="Host memory in use %")
    disk: DiskCheck = Field(default_factory=DiskCheck, description="Disk usage % of service.disk_paths")
    endpoints: CheckSection = Field(default_factory=CheckSection, description="Endpoints reachable and healthy")
    response_time: ResponseTimeCheck = Field(default_factory=ResponseTimeCheck, description="Endpoint response time")
    error_rate: ErrorRateCheck = Field(default_factory=ErrorRateCheck, description="The metrics' error_rate %")
    process: CheckSection = Field(default_factory=CheckSection, description="The service's process is running")
    process_memory: ProcessMemoryCheck = Field(default_factory=ProcessMemoryCheck, description="The service's resident memory")
    memory_growth: MemoryGrowthCheck = Field(default_factory=MemoryGrowthCheck, description="Sustained memory growth (leak)")
    log_errors: LogErrorsCheck = Field(default_factory=LogErrorsCheck, description="ERROR lines in service.log_file")
    database: CheckSection = Field(default_factory=CheckSection, description="The database accepts connections "
                                   "(disabling it skips every database check)")
    database_response_time: DatabaseResponseCheck = Field(default_factory=DatabaseResponseCheck,
                                                          description="Database connect + SELECT 1 time")
    connections: ConnectionsCheck = Field(default_factory=ConnectionsCheck, description="Connections against max_connections")
    service_connections: ServiceConnectionsCheck = Field(default_factory=ServiceConnectionsCheck,
                                                         description="The service's own connections")
    long_queries: LongQueriesCheck = Field(default_factory=LongQueriesCheck, description="Queries running too long")
    idle_in_transaction: IdleInTransactionCheck = Field(default_factory=IdleInTransactionCheck,
                                                        description="Sessions idle in transaction")
    blocking: BlockingCheck = Field(default_factory=BlockingCheck, description="Sessions waiting on another's lock")
    dead_tuples: DeadTuplesCheck = Field(default_factory=DeadTuplesCheck, description="Dead tuples of the jackpots table")
    wraparound: WraparoundCheck = Field(default_factory=WraparoundCheck, description="Transaction ID wraparound age")
    cache_hit: CacheHitCheck = Field(default_factory=CacheHitCheck, description="Shared-buffer cache hit ratio")
    deadlocks: DeadlocksCheck = Field(default_factory=DeadlocksCheck, description="Deadlocks since the last cycle")
    terminate_queries: TerminateQueries = Field(default_factory=TerminateQueries,
                                                description="Remediation: terminate long queries (off by default)")
    restart_service: RestartService = Field(default_factory=RestartService,
                                            description="Remediation: restart the service (off by default)")


# ---- running the checks ----------------------------------------------------------------------


def run_checks(settings, options: Options | None = None, *, state=None, host: str | None = None, persist: bool = False,
               clock: Callable[[], datetime] | None = None, on_connect: Callable[[int], None] | None = None) -> list[CheckResult]:
    """Given settings (and the monitor's options), run every enabled check once, concurrently; return
    the results. persist=False reads remembered values (log offsets, samples) without writing them."""
    options = options or settings.jobs.monitor
    context = CheckContext(settings=settings, options=options, host=host or _hostname(), state=state, persist=persist,
                           clock=clock or (lambda: datetime.now(timezone.utc)), on_connect=on_connect)
    return _run_all(context)


def _run_all(context: CheckContext) -> list[CheckResult]:
    from jobs.checks import database, endpoints, host as host_checks, logfile, process

    probes = []
    for module in (host_checks, endpoints, process, logfile, database):
        probes.extend(module.probes(context))
    return [result for result in run_probes(probes) if _section(context.options, result.name).enabled]


def run(context: JobContext) -> JobResult:
    options: Options = context.options  # type: ignore[assignment]
    started = time.perf_counter()
    check_context = CheckContext(settings=context.settings, options=options, host=context.host or _hostname(),
                                 state=context.state, persist=not context.dry_run, clock=context.clock,
                                 on_connect=context.backend_pids.add)
    results = _run_all(check_context)
    context.check_cancelled()
    now = context.clock()
    records = check_context.recall(HYSTERESIS_KEY) or {}
    transitions: dict[str, str] = {}
    for result in results:
        section = _section(options, result.name)
        record, transition = advance(records.get(result.name), result.state,
                                     section.for_cycles or options.for_cycles,
                                     section.recover_cycles or options.recover_cycles, now)
        records[result.name] = record
        if transition:
            transitions[result.name] = transition

    actions = remediate(context, check_context, options, results, records, now)
    for action in actions:
        record = records.get(action["check"])
        if record is not None:
            record["attempts"] = (record.get("attempts", []) + [action["text"]])[-ATTEMPTS_KEPT:]
    findings = [finding for result in results
                if (finding := finding_for(result, records[result.name], transitions.get(result.name))) is not None]
    findings.extend(retire_unchecked(records, {result.name for result in results}))
    for name, record in records.items():
        if not record["firing"] and transitions.get(name) == "recovered":
            record["attempts"] = []
    check_context.remember(HYSTERESIS_KEY, records)

    summary = build_summary(results, records, transitions, actions, started)
    problems = [result for result in results if result.state in ("warning", "critical")]
    firing = summary["firing"]
    if problems:
        listed = ", ".join(f"{result.name} {result.state}" for result in problems[:6])
        message = f"{len(problems)} check(s) failing: {listed}" + (" …" if len(problems) > 6 else "")
    else:
        message = f"all {len(results)} checks ok"
    if firing:
        message += f"; {len(firing)} alert(s) firing"
    if actions:
        message += f"; {len(actions)} remediation action(s)"
    context.report(message)
    return JobResult(status="problems" if problems else "ok", summary=summary, message=message, findings=findings)


# ---- hysteresis ------------------------------------------------------------------------------


def advance(record: dict[str, Any] | None, state: str, for_cycles: int, recover_cycles: int,
            now: datetime) -> tuple[dict[str, Any], str | None]:
    """Given a check's hysteresis record (or None), this cycle's state and the cycle counts, return
    the updated record and the transition: "raised", "recovered" or None. Unknown changes nothing."""
    record = dict(record or {"failing": 0, "passing": 0, "firing": False, "since": None})
    if state in ("warning", "critical"):
        if record["failing"] == 0:
            record["since"] = now.isoformat()
            record["worst"] = state
        record["failing"] += 1
        record["passing"] = 0
        record["worst"] = worst([record.get("worst", "ok"), state])
    elif state == "ok":
        record["passing"] += 1
        record["failing"] = 0
    if state != "unknown":
        record["critical"] = record.get("critical", 0) + 1 if state == "critical" else 0
        if state != "critical":
            record.pop("restarted_at_failing", None)  # a new streak of failures starts from scratch
    record["state"] = state
    transition = None
    if not record["firing"] and record["failing"] >= for_cycles:
        record["firing"] = True
        record["fired_at"] = now.isoformat()
        transition = "raised"
    elif record["firing"] and record["passing"] >= recover_cycles:
        record["firing"] = False
        record["recovered_at"] = now.isoformat()
        transition = "recovered"
    elif state == "ok" and not record["firing"]:
        record.pop("attempts", None)  # remediation that fixed it before it ever fired: in that run's summary
    return record, transition


def finding_for(result: CheckResult, record: dict[str, Any], transition: str | None) -> Finding | None:
    """The Finding alerting should see for a check this cycle: ok=False while it is firing and still
    failing, ok=True the cycle it recovers; None otherwise (a firing check counting its good cycles
    towards recovery, or one that could not be measured, adds no new evidence)."""
    recovered = transition == "recovered"
    if not recovered and not (record["firing"] and result.state in ("warning", "critical")):
        return None
    info = info_for(result.name)
    severity = info.severity_critical if (result.state == "critical" or (result.state != "warning" and record.get("worst") == "critical")) \
        else info.severity_warning
    symptoms = [f"{info.label}: {result.value_text()}" + (f" (thresholds {result.threshold_text()})" if result.threshold_text() else "")
                + f" - {result.message}"]
    if record["firing"]:
        symptoms.append(f"failing for {record['failing']} consecutive cycle(s) since {record.get('since')}")
    for line in result.details.get("lines", [])[:10]:
        symptoms.append(line)
    details = {"check": result.name, "state": result.state, "value": result.value, "unit": result.unit,
               "warning": result.warning, "critical": result.critical, "hint": info.hint,
               "failing_cycles": record["failing"], "since": record.get("since")}
    for key in ("snapshot", "chain", "queries", "sessions", "pids", "url", "path"):
        if key in result.details:
            details[key] = result.details[key]
    title = f"{info.label}: {result.message}" if record["firing"] else f"{info.label} recovered: {result.message}"
    return Finding(key=result.name, ok=not record["firing"], title=redact(title)[:240], category=info.category,
                   severity=severity, code=info.code, scope=info.scope, symptoms=[redact(line) for line in symptoms],
                   attempts=list(record.get("attempts", [])), logs=list(result.evidence), details=details)


def retire_unchecked(records: dict[str, dict[str, Any]], checked: set[str]) -> list[Finding]:
    """Forget checks that no longer run (disabled, a disk path or endpoint removed); a firing one is
    resolved, so its alert does not stay open forever. Return those resolving findings."""
    findings = []
    for name in sorted(set(records) - checked):
        record = records.pop(name)
        if record.get("firing"):
            info = info_for(name)
            findings.append(Finding(key=name, ok=True, title=f"{info.label}: no longer checked (disabled or removed "
                                    f"from the configuration)", category=info.category, severity=info.severity_warning,
                                    code=info.code, scope=info.scope, details={"check": name}))
    return findings


# ---- remediation -----------------------------------------------------------------------------


def remediate(context: JobContext, check_context: CheckContext, options: Options, results: list[CheckResult],
              records: dict[str, dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Take the enabled remediation actions; return what was done (or, in a dry run, would be)."""
    actions: list[dict[str, Any]] = []
    by_name = {result.name: result for result in results}
    terminate = options.terminate_queries
    reachable = by_name.get("database.reachable")
    if terminate.enabled and reachable is not None and reachable.state == "ok":
        from jobs.checks.database import terminate_long_queries

        try:
            sessions = terminate_long_queries(check_context, older_than=terminate.older_than, pattern=terminate.pattern,
                                              dry_run=context.dry_run)
        except Exception as error:  # noqa: BLE001 - a failed remediation is reported, the cycle goes on
            sessions = []
            actions.append(_action("database.long_queries", "terminate_query", now, False,
                                   f"terminating long queries failed: {redact(str(error).splitlines()[0])}"))
        for session in sessions:
            verb = "would terminate" if context.dry_run else ("terminated" if session["terminated"] else "could not terminate")
            text = (f"{verb} pid {session['pid']} ({session['application_name'] or '?'}) after "
                    f"{session['query_seconds']:.0f}s: {session['query'][:120]}")
            actions.append(_action("database.long_queries", "terminate_query", now, session["terminated"], text, session))
    restart = options.restart_service
    health = by_name.get("service.health")
    record = records.get("service.health")
    if restart.enabled and health is not None and record is not None and health.state == "critical":
        action = _maybe_restart(context, check_context, restart, record, now)
        if action is not None:
            actions.append(action)
    for action in actions:
        (context.logger.warning if context.logger else (lambda *a: None))("remediation: {}", action["text"])
    return actions


def _maybe_restart(context: JobContext, check_context: CheckContext, restart: RestartService,
                   record: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    failing = record.get("critical", 0)  # consecutive failed (critical) health checks
    streak_start = record.get("restarted_at_failing")
    if failing < restart.after_failures:
        return None
    if streak_start is not None and streak_start < failing and failing - streak_start < restart.after_failures:
        return None  # give the last restart a chance
    history = [stamp for stamp in check_context.recall(RESTARTS_KEY) or []
               if datetime.fromisoformat(stamp) > now - timedelta(hours=1)]
    if len(history) >= restart.max_per_hour:
        return _action("service.health", "restart_service", now, False,
                       f"restart not run: already {len(history)} restart(s) in the last hour "
                       f"(max_per_hour {restart.max_per_hour})")
    record["restarted_at_failing"] = failing
    command = shlex.split(restart.command)
    if context.dry_run:
        return _action("service.health", "restart_service", now, False,
                       f"would run `{restart.command}` after {failing} failed health checks")
    check_context.remember(RESTARTS_KEY, history + [now.isoformat()])
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=restart.timeout)
        output = (completed.stderr or completed.stdout).strip().splitlines()
        done = completed.returncode == 0
        text = (f"ran `{restart.command}` after {failing} failed health checks: exit {completed.returncode}"
                + (f" ({output[-1][:200]})" if output else ""))
    except subprocess.TimeoutExpired:
        done, text = False, f"ran `{restart.command}`: no exit within {restart.timeout:g}s"
    except OSError as error:
        done, text = False, f"could not run `{restart.command}`: {error.strerror or error}"
    return _action("service.health", "restart_service", now, done, redact(text))


def _action(check: str, kind: str, now: datetime, done: bool, text: str, data: dict | None = None) -> dict[str, Any]:
    return {"check": check, "action": kind, "at": now.isoformat(timespec="seconds"), "done": done,
            "text": f"{now.isoformat(timespec='seconds')} {text}", **({"target": data} if data else {})}


# ---- summary ---------------------------------------------------------------------------------


def build_summary(results: list[CheckResult], records: dict[str, dict[str, Any]], transitions: dict[str, str],
                  actions: list[dict[str, Any]], started: float) -> dict[str, Any]:
    counts = {"ok": 0, "warning": 0, "critical": 0, "unknown": 0}
    checks = {}
    snapshot = None
    for result in results:
        counts[result.state] += 1
        data = result.to_dict()
        details = dict(data.get("details", {}))
        snapshot = details.pop("snapshot", snapshot)
        if details:
            data["details"] = details
        else:
            data.pop("details", None)
        record = records.get(result.name, {})
        data.update({"failing_cycles": record.get("failing", 0), "passing_cycles": record.get("passing", 0),
                     "firing": record.get("firing", False)})
        checks[result.name] = data
    summary: dict[str, Any] = {
        "checks_run": len(results), **counts,
        "firing": sorted(name for name, record in records.items() if record.get("firing") and name in checks),
        "raised": sorted(name for name, kind in transitions.items() if kind == "raised"),
        "recovered": sorted(name for name, kind in transitions.items() if kind == "recovered"),
        "actions": actions,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "checks": checks,
    }
    if snapshot is not None:
        summary["database_snapshot"] = snapshot
    return summary


def _section(options: Options, name: str) -> Any:
    return getattr(options, section_for(name) or "endpoints")


def _hostname() -> str:
    import socket

    return socket.gethostname()


__all__ = ["NAME", "SCOPE", "DESCRIPTION", "Options", "run", "run_checks", "advance", "finding_for"]
