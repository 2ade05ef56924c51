"""Shared set-up for the monitor's tests: a real simulator process, a config pointing at it, a
controllable clock, and a way to run the monitor job cycle after cycle."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from config.loader import load_settings
from jobs.base import JobContext
from jobs.checks import CheckResult
from scheduler.simulator import SimulatorProcess
from scheduler.state import StateStore

# The test machine's own load is not under test: host CPU never fails unless a test says so.
QUIET_MONITOR = """
[jobs.monitor]
cpu_sample = "50ms"

[jobs.monitor.cpu]
warning = 101
critical = 101
"""


class FakeClock:
    """An injectable clock: cycles are minutes apart without sleeping."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 300) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def service_dir(tmp_path) -> Path:
    directory = tmp_path / "jackpot-service"
    (directory / "logs").mkdir(parents=True)
    return directory


@pytest.fixture
def simulator(service_dir, database_url):
    """The simulated jackpot service as a real process, logging to logs/application.log, with the
    test's database for held locks and long queries."""
    process = SimulatorProcess.start(log_path=str(service_dir / "logs" / "application.log"), database_url=database_url)
    yield process
    process.stop()


def service_section(simulator: SimulatorProcess, service_dir: Path, **extra: Any) -> str:
    values = {"base_url": simulator.url, "directory": str(service_dir), "request_timeout": "2s",
              "process_pattern": f"scheduler\\.simulator --port 0 .*--log {service_dir}"}
    values.update(extra)
    lines = ["[service]"] + [f"{key} = {_toml(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def write_settings(make_config, simulator: SimulatorProcess, service_dir: Path, extra: str = "", **service: Any):
    """Write the test's config (database, state, service, quiet CPU, `extra` TOML) and load it."""
    path = make_config(service_section(simulator, service_dir, **service) + QUIET_MONITOR + extra,
                       name=f"config-{uuid.uuid4().hex[:6]}.toml")
    return load_settings(str(path), environ={}).settings


def with_monitor(settings, **sections: dict[str, Any] | Any):
    """Return settings whose [jobs.monitor] has the given sections/values replaced (merged)."""
    data = settings.jobs.monitor.model_dump()
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    options = type(settings.jobs.monitor).model_validate(data)
    jobs = settings.jobs.model_copy(update={"monitor": options})
    return settings.model_copy(update={"jobs": jobs})


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def open_state(settings) -> StateStore:
    return StateStore.open(settings)


class Cycles:
    """Run the monitor job cycle after cycle, as the runner would, with a fake clock."""

    def __init__(self, settings, state: StateStore, clock: FakeClock | None = None, host: str = "test-host"):
        self.settings = settings
        self.state = state
        self.clock = clock or FakeClock()
        self.host = host

    def run(self, *, dry_run: bool = False, settings=None, advance: float = 300):
        from jobs import monitor

        settings = settings or self.settings
        self.clock.advance(advance)
        context = JobContext(settings=settings, options=settings.jobs.monitor, run_id=uuid.uuid4().hex, job="monitor",
                             dry_run=dry_run, host=self.host, state=self.state, clock=self.clock)
        try:
            return monitor.run(context)
        finally:
            context.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def python_command(code: str) -> str:
    """A shell-style command line running `code` with this interpreter (for restart_service.command)."""
    import shlex

    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


__all__ = ["FakeClock", "Cycles", "service_dir", "simulator", "write_settings", "with_monitor", "by_name",
           "open_state", "wait_for", "python_command"]
