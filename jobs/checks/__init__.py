"""The monitor's checks: host, service endpoints, service process, service log, database.

Each module exposes `probes(context) -> list[Probe]`. A probe is one unit of work run in its own
thread with its own timeout (one HTTP request, one database session, one psutil sweep) and returns
one or more CheckResults. `run_probes` runs them all at once and waits at most each probe's
timeout, so one hung endpoint cannot stall the cycle.

Every check name has an entry in CATALOGUE: its label, the alert it maps to (category, code,
severity when critical / when warning), its scope and a one-line hint from the guide's resolution
steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from config.settings import Settings
    from scheduler.state import StateStore

State = Literal["ok", "warning", "critical", "unknown"]
STATE_ORDER = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
KV_NAMESPACE = "monitor"


@dataclass
class CheckResult:
    """One measurement: its state, the value, the thresholds it was compared to, and why."""

    name: str
    state: State
    value: float | None = None
    unit: str = ""
    warning: float | None = None
    critical: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    elapsed_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "state": self.state, "value": self.value, "unit": self.unit,
                "warning": self.warning, "critical": self.critical, "message": self.message}
        if self.details:
            data["details"] = self.details
        if self.evidence:
            data["evidence"] = self.evidence
        if self.elapsed_ms is not None:
            data["elapsed_ms"] = self.elapsed_ms
        return data

    def threshold_text(self) -> str:
        """'> 80 %' style text of the thresholds, for tables and symptoms."""
        sign = "<" if self.details.get("lower_is_worse") else ">"
        parts = []
        if self.warning is not None:
            parts.append(f"warn {sign} {format_value(self.warning, self.unit)}")
        if self.critical is not None:
            parts.append(f"crit {sign} {format_value(self.critical, self.unit)}")
        return ", ".join(parts)

    def value_text(self) -> str:
        if self.details.get("text"):
            return str(self.details["text"])
        return "-" if self.value is None else format_value(self.value, self.unit)


def format_value(value: float, unit: str) -> str:
    """Given a value and its unit, return it for people: 0.734 s -> '734 ms', 12.25 % -> '12.2 %'."""
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.0f} ms"
        if value < 120:
            return f"{value:.1f} s"
        if value < 7200:
            return f"{value / 60:.1f} min"
        return f"{value / 3600:.1f} h"
    if unit in ("%", "MB", "MB/h", "/min"):
        return f"{value:.1f} {unit}"
    if float(value).is_integer():
        return f"{int(value):,}" + (f" {unit}" if unit else "")
    return f"{value:.2f}" + (f" {unit}" if unit else "")


def grade(value: float | None, warning: float | None, critical: float | None, *, lower_is_worse: bool = False) -> State:
    """Given a value and its thresholds, return its state. A value past a threshold (strictly) fails;
    None means not measured: unknown."""
    if value is None:
        return "unknown"
    def past(limit: float | None) -> bool:
        if limit is None:
            return False
        return value < limit if lower_is_worse else value > limit

    if past(critical):
        return "critical"
    if past(warning):
        return "warning"
    return "ok"


def graded(name: str, value: float | None, threshold: Any, *, unit: str, message: str,
           lower_is_worse: bool = False, details: dict[str, Any] | None = None,
           evidence: list[str] | None = None) -> CheckResult:
    """Given a value and a threshold section (warning/critical), return the CheckResult."""
    details = dict(details or {})
    if lower_is_worse:
        details["lower_is_worse"] = True
    return CheckResult(name=name, state=grade(value, threshold.warning, threshold.critical, lower_is_worse=lower_is_worse),
                       value=None if value is None else round(float(value), 3), unit=unit,
                       warning=threshold.warning, critical=threshold.critical, message=message,
                       details=details, evidence=list(evidence or []))


@dataclass
class CheckContext:
    """What every check gets: the settings, the monitor's options, this host, and a memory.

    persist=False (diagnose) reads remembered values but never writes them, so a diagnose run does
    not disturb the daemon's offsets, samples and counters. state may be None (no state store).
    """

    settings: "Settings"
    options: Any
    host: str
    state: "StateStore | None" = None
    persist: bool = True
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    on_connect: Callable[[int], None] | None = None

    def recall(self, key: str, default: Any = None) -> Any:
        if self.state is None:
            return default
        try:
            return self.state.get_value(KV_NAMESPACE, f"{self.host}:{key}", default)
        except Exception:  # noqa: BLE001 - a state store hiccup degrades to "no memory"
            return default

    def remember(self, key: str, value: Any) -> None:
        if self.state is None or not self.persist:
            return
        self.state.set_value(KV_NAMESPACE, f"{self.host}:{key}", value)


@dataclass
class Probe:
    """One unit of check work, run in its own thread, bounded by `timeout` seconds.

    on_timeout returns the results to report when the probe did not finish in time.
    """

    name: str
    timeout: float
    run: Callable[[], list[CheckResult]]
    on_timeout: Callable[[float], list[CheckResult]]


def run_probes(probes: list[Probe]) -> list[CheckResult]:
    """Run every probe concurrently; return all results, in probe order.

    A probe that raises yields 'unknown' results (via on_timeout's names) with the error; a probe
    that exceeds its timeout is abandoned (its daemon thread may finish later, unobserved).
    """
    slots: dict[int, list[CheckResult] | BaseException] = {}
    threads: list[tuple[Probe, threading.Thread, float]] = []
    for index, probe in enumerate(probes):
        def work(index: int = index, probe: Probe = probe) -> None:
            started = time.perf_counter()
            try:
                results = probe.run()
                elapsed = round((time.perf_counter() - started) * 1000, 1)
                for result in results:
                    if result.elapsed_ms is None:
                        result.elapsed_ms = elapsed
                slots[index] = results
            except BaseException as error:  # noqa: BLE001 - reported as unknown below
                slots[index] = error

        thread = threading.Thread(target=work, name=f"check-{probe.name}", daemon=True)
        thread.start()
        threads.append((probe, thread, time.monotonic() + probe.timeout))
    results: list[CheckResult] = []
    for index, (probe, thread, deadline) in enumerate(threads):
        thread.join(max(deadline - time.monotonic(), 0))
        outcome = slots.get(index)
        if outcome is None:
            results.extend(probe.on_timeout(probe.timeout))
        elif isinstance(outcome, BaseException):
            from scheduler.redact import redact

            text = redact(f"{type(outcome).__name__}: {outcome}".splitlines()[0])[:300]
            for result in probe.on_timeout(probe.timeout):
                results.append(CheckResult(name=result.name, state="unknown", unit=result.unit,
                                           warning=result.warning, critical=result.critical,
                                           message=f"check failed: {text}"))
        else:
            results.extend(outcome)
    return results


def worst(states: list[str]) -> str:
    return max(states, key=lambda state: STATE_ORDER[state], default="ok")


@dataclass(frozen=True)
class CheckInfo:
    """How a check maps to an alert, and what the guide says to do about it."""

    label: str
    category: str
    code: str
    severity_critical: str
    severity_warning: str
    scope: str
    hint: str


CATALOGUE: dict[str, CheckInfo] = {
    "host.cpu": CheckInfo("CPU usage", "infrastructure", "J007", "P2", "P3", "host",
                          "find the busy process (top -p $(pgrep -f jackpot)); shed load or add CPU"),
    "host.memory": CheckInfo("Memory usage", "infrastructure", "J007", "P2", "P3", "host",
                             "free memory: restart the service to clear a leak, kill unnecessary processes"),
    "host.disk": CheckInfo("Disk usage", "infrastructure", "J007", "P2", "P3", "host",
                           "clear disk space: rotate and compress logs (jobs run rotate_logs), remove old backups"),
    "service.health": CheckInfo("Health endpoint", "service_down", "J001", "P1", "P2", "host",
                                "restart the service (systemctl start jackpot-service); read journalctl -u jackpot-service"),
    "service.health_database": CheckInfo("Service's database health", "service_down", "J001", "P1", "P2", "host",
                                         "the service cannot use its database: pg_isready, systemctl status postgresql"),
    "service.health_jackpot": CheckInfo("Jackpot pools health", "service_down", "J001", "P2", "P3", "host",
                                        "jackpot pools unhealthy: check the service log and data (jobs run validate_data)"),
    "service.metrics": CheckInfo("Metrics endpoint", "service_down", "J001", "P2", "P3", "host",
                                 "metrics endpoint not answering: check the service process and its log"),
    "service.response_time": CheckInfo("Response time", "performance", "J006", "P2", "P3", "host",
                                       "responses > 500 ms: look for slow queries and pool exhaustion (diagnose), system load"),
    "service.error_rate": CheckInfo("Error rate", "performance", "J006", "P2", "P3", "host",
                                    "error rate above 1 %: read the ERROR lines in logs/application.log, check the database"),
    "process.running": CheckInfo("Service process", "service_down", "J001", "P1", "P2", "host",
                                 "process not running: systemctl start jackpot-service (or pm2 restart); read the startup log"),
    "process.memory": CheckInfo("Service memory (RSS)", "infrastructure", "J007", "P2", "P3", "host",
                                "restart to clear memory; cap it (pm2 --max-memory-restart 1G, --max-old-space-size)"),
    "process.memory_growth": CheckInfo("Service memory growth", "infrastructure", "J007", "P2", "P3", "host",
                                       "memory rising steadily (a leak): restart to clear it, take a heap dump, review listeners"),
    "log.errors": CheckInfo("ERROR lines in the log", "performance", "J006", "P2", "P3", "host",
                            "read the ERROR lines (grep ERROR logs/application.log); fix the cause they name"),
    "database.reachable": CheckInfo("Database reachable", "service_down", "J001", "P1", "P2", "database",
                                    "database not accepting connections: systemctl status postgresql, pg_isready, its log"),
    "database.response_time": CheckInfo("Database response time", "performance", "J006", "P2", "P3", "database",
                                        "database slow to answer: check load, locks and long queries on the server"),
    "database.connections": CheckInfo("Connections in use", "performance", "J006", "P2", "P3", "database",
                                      "connection pool exhaustion: see who holds connections; restart the service to clear its pool"),
    "database.service_connections": CheckInfo("Service's connections", "performance", "J006", "P2", "P3", "database",
                                              "the service holds many connections: check its pool size (JACKPOT_MAX_CONNECTIONS)"),
    "database.long_queries": CheckInfo("Long-running queries", "performance", "J006", "P2", "P3", "database",
                                       "kill long-running queries (pg_terminate_backend) and EXPLAIN ANALYZE them"),
    "database.idle_in_transaction": CheckInfo("Idle in transaction", "performance", "J006", "P2", "P3", "database",
                                              "a client holds a transaction open: find it by pid/application; it blocks vacuum"),
    "database.blocking": CheckInfo("Blocking lock chains", "performance", "J006", "P2", "P3", "database",
                                   "terminate the session at the head of the chain if it is stuck; fix the client"),
    "database.dead_tuples": CheckInfo("Dead tuples", "maintenance", "J006", "P3", "P4", "database",
                                      "run VACUUM ANALYZE jackpots (jobs run vacuum_analyze); check autovacuum"),
    "database.wraparound": CheckInfo("Transaction ID age", "data_corruption", "J007", "P1", "P2", "database",
                                     "VACUUM (FREEZE) the oldest tables now; find what blocks autovacuum"),
    "database.cache_hit": CheckInfo("Cache hit ratio", "performance", "J006", "P3", "P4", "database",
                                    "working set larger than memory: shared_buffers = 25 % of RAM, add indexes"),
    "database.deadlocks": CheckInfo("Deadlocks", "performance", "J002", "P2", "P3", "database",
                                    "transactions lock rows in different orders: read the deadlock details in the server log"),
}


# check name -> its section in [jobs.monitor] (enabled, thresholds, for_cycles, recover_cycles)
SECTIONS: dict[str, str] = {
    "host.cpu": "cpu", "host.memory": "memory", "host.disk": "disk",
    "service.health": "endpoints", "service.health_database": "endpoints", "service.health_jackpot": "endpoints",
    "service.metrics": "endpoints", "service.response_time": "response_time", "service.error_rate": "error_rate",
    "process.running": "process", "process.memory": "process_memory", "process.memory_growth": "memory_growth",
    "log.errors": "log_errors", "database.reachable": "database", "database.response_time": "database_response_time",
    "database.connections": "connections", "database.service_connections": "service_connections",
    "database.long_queries": "long_queries", "database.idle_in_transaction": "idle_in_transaction",
    "database.blocking": "blocking", "database.dead_tuples": "dead_tuples", "database.wraparound": "wraparound",
    "database.cache_hit": "cache_hit", "database.deadlocks": "deadlocks",
}


def base_name(name: str) -> str:
    """'host.disk:/var' -> 'host.disk'; 'service.metrics.response_time' -> 'service.response_time'."""
    if name.startswith("service.") and name.endswith(".response_time"):
        return "service.response_time"
    return name.split(":", 1)[0]


def section_for(name: str) -> str:
    """Given a check name, return the name of its [jobs.monitor] section."""
    return SECTIONS.get(base_name(name), "")


def info_for(name: str) -> CheckInfo:
    """Given a check name such as 'host.disk:/var' or 'service.health.response_time', return its CheckInfo."""
    base = base_name(name)
    if base in CATALOGUE:
        return CATALOGUE[base]
    return CheckInfo(name, "maintenance", "J005", "P3", "P4", "host", "")
