"""ping_database: SELECT 1 and the server version. Proves the path from config to ledger end to end."""

from __future__ import annotations

import time

from pydantic import Field
from sqlalchemy import text

from config.types import Duration, Schedule
from jobs.base import JobContext, JobOptions, JobResult

NAME = "ping_database"
SCOPE = "database"
DESCRIPTION = "Connect to the target database, run SELECT 1 and report the server version and round trip"


class Options(JobOptions):
    enabled: bool = False
    schedule: Schedule = "every 1m"
    timeout: Duration = 30.0
    sleep: Duration = Field(0.0, description="Hold SELECT pg_sleep(...) this long before answering (tests: a long job "
                                             "that PostgreSQL can cancel); 0 = off")


def run(context: JobContext) -> JobResult:
    started = time.perf_counter()
    with context.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        version = connection.execute(text("SHOW server_version")).scalar_one()
        if context.options.sleep > 0:
            context.report(f"holding pg_sleep({context.options.sleep:g})")
            connection.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": context.options.sleep})
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    context.report(f"database answered in {elapsed_ms} ms, PostgreSQL {version}")
    return JobResult(status="ok", summary={"server_version": version, "round_trip_ms": elapsed_ms},
                     message=f"PostgreSQL {version} answered in {elapsed_ms} ms")
