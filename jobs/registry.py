"""The explicit table of jobs. Add a job: write jobs/<name>.py with the shape in jobs/base.py and
list it here."""

from __future__ import annotations

import importlib
from types import ModuleType

from scheduler.errors import UsageError

# The order is the order of `jobs list`.
JOB_MODULES: dict[str, str] = {
    "vacuum_analyze": "jobs.vacuum_analyze",
    "trim_history": "jobs.trim_history",
    "validate_data": "jobs.validate_data",
    "rotate_logs": "jobs.rotate_logs",
    "monitor": "jobs.monitor",
    "ping_database": "jobs.ping_database",
}

_loaded: dict[str, ModuleType] = {}


def _available() -> dict[str, ModuleType]:
    if not _loaded:
        for name, module_name in JOB_MODULES.items():
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name == module_name:
                    continue  # not written yet
                raise
            _loaded[name] = module
    return _loaded


def job_names() -> list[str]:
    return list(_available())


def all_jobs() -> dict[str, ModuleType]:
    return dict(_available())


def get_job(name: str) -> ModuleType:
    """Given a job name, return its module. Raise UsageError naming the known jobs otherwise."""
    jobs = _available()
    if name not in jobs:
        raise UsageError(f"unknown job {name!r}. Available jobs: {', '.join(jobs)}")
    return jobs[name]
