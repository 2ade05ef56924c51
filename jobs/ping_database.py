"""ping_database: SELECT 1 and the server version. Proves the path from config to ledger end to end."""

from __future__ import annotations

import time

from sqlalchemy import text

from config.types import Schedule
from jobs.base import JobContext, JobOptions, JobResult

NAME = "ping_database"
SCOPE = "database"
DESCRIPTION = "Connect to the target database, run SELECT 1 and report the server version and round trip"


class Options(JobOptions):
    enabled: bool = False
    schedule: Schedule = "every 1m"
    timeout: float = 30.0


def run(context: JobContext) -> JobResult:
    started = time.perf_counter()
    with context.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        version = connection.execute(text("SHOW server_version")).scalar_one()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    context.report(f"database answered in {elapsed_ms} ms, PostgreSQL {version}")
    return JobResult(status="ok", summary={"server_version": version, "round_trip_ms": elapsed_ms},
                     message=f"PostgreSQL {version} answered in {elapsed_ms} ms")
