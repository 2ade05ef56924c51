"""No overlap: a job never runs twice at once, on this host or on any other.

Database jobs hold a PostgreSQL session advisory lock on the target database for the whole run, on
a dedicated connection (a session advisory lock outlives a pooled checkout, so it is never taken on a
pooled connection) and released explicitly. Host jobs hold an flock on a file in the runtime
directory. When the lock is taken, JobLocked says where and since when.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy

from scheduler.errors import JobLocked, classify
from scheduler.ledger import hostname, running_runs

LOCK_NAMESPACE = 74230


def advisory_key(job: str) -> tuple[int, int]:
    """The two int4 keys of a job's advisory lock."""
    return LOCK_NAMESPACE, zlib.crc32(f"jackpot-maint:{job}".encode()) & 0x7FFFFFFF


def runtime_directory() -> Path:
    """Where host lock files live: $RUNTIME_DIRECTORY under systemd, else a per-user temp folder."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        path = Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    else:
        path = Path(tempfile.gettempdir()) / f"jackpot-maint-{os.geteuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@contextmanager
def job_lock(settings, job: str, scope: str, state=None) -> Iterator[None]:
    """Hold the job's lock for the duration of the block. Raise JobLocked if another run holds it,
    ConnectionFailed if the target database (which holds database locks) is unreachable."""
    if scope == "host":
        with _host_lock(job, state):
            yield
    else:
        with _database_lock(settings, job, state):
            yield


@contextmanager
def _host_lock(job: str, state) -> Iterator[None]:
    path = runtime_directory() / f"{job}.lock"
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise JobLocked(_locked_message(job, state, None)) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


@contextmanager
def _database_lock(settings, job: str, state) -> Iterator[None]:
    from scheduler.db import create_target_engine

    engine = create_target_engine(settings, job=f"lock:{hostname()}", autocommit=True, pool_size=1)
    key1, key2 = advisory_key(job)
    try:
        try:
            connection = engine.connect()
        except Exception as error:  # noqa: BLE001
            raise classify(error, resource=settings.database_display()) from None
        try:
            got = connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": key1, "b": key2}).scalar_one()
            if not got:
                holder = connection.execute(sqlalchemy.text(
                    "SELECT a.application_name, a.backend_start, host(a.client_addr) AS client "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.classid = :a AND l.objid = :b AND l.granted LIMIT 1"),
                    {"a": key1, "b": key2}).first()
                raise JobLocked(_locked_message(job, state, holder))
            try:
                yield
            finally:
                try:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"), {"a": key1, "b": key2})
                except Exception:  # noqa: BLE001 - closing the session releases it anyway
                    pass
        finally:
            connection.close()
    finally:
        engine.dispose()


def _locked_message(job: str, state, holder) -> str:
    where = None
    if state is not None:
        try:
            running = running_runs(state, job)
        except Exception:  # noqa: BLE001
            running = []
        if running:
            run = running[-1]
            where = f"on host {run.host} (pid {run.pid}) since {run.started_at:%Y-%m-%d %H:%M:%S} UTC, run {run.id}"
    if where is None and holder is not None:
        name = (holder.application_name or "").removeprefix("jackpot-maint:lock:")
        where = f"on host {name or holder.client or 'unknown'} since {holder.backend_start:%Y-%m-%d %H:%M:%S %Z}"
    return f"{job} is already running {where or 'in another process'}; not started (try again when it has finished)"
