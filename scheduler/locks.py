"""No overlap: a job never runs twice at once, on this host or on any other.

Database jobs hold a PostgreSQL session advisory lock on the target database for the whole run, on
a dedicated connection (a session advisory lock outlives a pooled checkout, so it is never taken on a
pooled connection) and released explicitly. Host jobs hold an flock on a file in the runtime
directory. When the lock is taken, JobLocked says where and since when.

Exactly once across hosts: a scheduled fire of a database job is also *claimed* with a row unique on
(job, scheduled_for) in the target database's `jackpot_maint.schedule_claims`, on the same dedicated
connection and while holding the advisory lock. The target database is shared by every host by
definition, so the claim works whatever state store each host uses. The host that loses the claim
records the fire as skipped ("claimed by host X"), not as a run. Interval schedules are anchored to a
fixed epoch (see scheduler.daemon.EveryTrigger), so every host computes the same fire times.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
import zlib
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import sqlalchemy

from scheduler.errors import JackpotError, JobLocked, classify
from scheduler.ledger import hostname, running_runs

LOCK_NAMESPACE = 74230
CLAIMS_TABLE = "jackpot_maint.schedule_claims"
_CLAIMS_DDL = (
    "CREATE SCHEMA IF NOT EXISTS jackpot_maint",
    "CREATE TABLE IF NOT EXISTS jackpot_maint.schedule_claims ("
    " job text NOT NULL, scheduled_for timestamptz NOT NULL, host text NOT NULL, pid integer,"
    " claimed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, scheduled_for))",
)
# databases (by display name) where the claims table is known to exist, or cannot be created
_claims_ready: dict[str, bool] = {}


class FireClaimed(JobLocked):
    """This scheduled fire was already claimed (and run, or being run) by another host."""


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
def job_lock(settings, job: str, scope: str, state=None, *, claim_for: datetime | None = None) -> Iterator[None]:
    """Hold the job's lock for the duration of the block. Raise JobLocked if another run holds it,
    ConnectionFailed if the target database (which holds database locks) is unreachable.

    claim_for: the scheduled fire time of a database job; also claim that fire across hosts and raise
    FireClaimed if another host already claimed it. Host jobs run on every host and claim nothing.
    """
    if scope == "host":
        with _host_lock(job, state):
            yield
    else:
        with _database_lock(settings, job, state, claim_for):
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
def _database_lock(settings, job: str, state, claim_for: datetime | None = None) -> Iterator[None]:
    engine = _lock_engine(settings)
    key1, key2 = advisory_key(job)
    try:
        connection = engine.connect()
    except Exception as error:  # noqa: BLE001
        raise classify(error, resource=settings.database_display()) from None
    released = True  # nothing held yet
    try:
        got = connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": key1, "b": key2}).scalar_one()
        if not got:
            holder = connection.execute(sqlalchemy.text(
                "SELECT a.application_name, a.backend_start, host(a.client_addr) AS client "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = :a AND l.objid = :b AND l.granted LIMIT 1"),
                {"a": key1, "b": key2}).first()
            raise JobLocked(_locked_message(job, state, holder))
        released = False
        try:
            if claim_for is not None:
                try:
                    _claim(settings, connection, job, claim_for)
                except JackpotError:
                    raise
                except Exception as error:  # noqa: BLE001
                    raise classify(error, resource=settings.database_display()) from None
            yield
        finally:
            try:
                released = bool(connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"),
                                                   {"a": key1, "b": key2}).scalar_one())
            except Exception:  # noqa: BLE001 - discarding the session below releases it anyway
                released = False
    except Exception as error:
        if not isinstance(error, JackpotError):
            released = False
        raise
    finally:
        if not released:
            # a session advisory lock outlives a pooled checkout: a session that may still hold it never
            # goes back to the pool; closing the session is what surely releases it
            connection.invalidate()
        connection.close()


_lock_engines: dict[str, sqlalchemy.Engine] = {}
_lock_engines_guard = threading.Lock()


def _lock_engine(settings) -> sqlalchemy.Engine:
    """One small pooled engine for lock sessions per target database, reused across runs, so that a
    fire does not pay for a new connection and authentication before it starts."""
    from scheduler.db import create_target_engine

    key = settings.database_url()
    with _lock_engines_guard:
        engine = _lock_engines.get(key)
        if engine is None:
            for old in _lock_engines.values():  # the database URL changed (reload): drop the old pool
                old.dispose()
            _lock_engines.clear()
            engine = create_target_engine(settings, job=f"lock:{hostname()}", autocommit=True, pool_size=2)
            _lock_engines[key] = engine
        return engine


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


def _claim(settings, connection: sqlalchemy.Connection, job: str, scheduled_for: datetime) -> None:
    """Insert the (job, scheduled_for) claim. Raise FireClaimed naming the host that has it."""
    from loguru import logger

    if not _ensure_claims_table(settings, connection):
        return  # no table and no right to create it: warned once; the advisory lock still prevents overlap
    claimed = connection.execute(sqlalchemy.text(
        f"INSERT INTO {CLAIMS_TABLE} (job, scheduled_for, host, pid) VALUES (:job, :at, :host, :pid) "
        "ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING host"),
        {"job": job, "at": scheduled_for, "host": hostname(), "pid": os.getpid()}).first()
    if claimed is not None:
        return
    holder = connection.execute(sqlalchemy.text(
        f"SELECT host, claimed_at FROM {CLAIMS_TABLE} WHERE job = :job AND scheduled_for = :at"),
        {"job": job, "at": scheduled_for}).first()
    who = f"host {holder.host} at {holder.claimed_at:%Y-%m-%d %H:%M:%S %Z}" if holder else "another host"
    logger.debug("{}: fire {} claimed by {}", job, scheduled_for.isoformat(), who)
    raise FireClaimed(f"the {scheduled_for.isoformat()} fire of {job} was claimed by {who}; not run here")


def _ensure_claims_table(settings, connection: sqlalchemy.Connection) -> bool:
    from loguru import logger

    key = settings.database_display()
    if key in _claims_ready:
        return _claims_ready[key]
    exists = connection.execute(sqlalchemy.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": CLAIMS_TABLE}).scalar_one()
    if not exists:
        # several hosts may start at once: serialise the CREATEs (IF NOT EXISTS still races in the catalog)
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:a, 0)"), {"a": LOCK_NAMESPACE})
        try:
            for statement in _CLAIMS_DDL:
                connection.execute(sqlalchemy.text(statement))
        except Exception as error:  # noqa: BLE001 - a missing privilege must not stop the jobs
            logger.warning("cannot create {} on {} ({}); scheduled fires are not claimed, so with several hosts "
                           "a fire may run on more than one (run `jackpot-maint db init` as the owner, or grant CREATE)",
                           CLAIMS_TABLE, key, classify(error).message)
            _claims_ready[key] = False
            return False
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, 0)"), {"a": LOCK_NAMESPACE})
    _claims_ready[key] = True
    return True


def prune_claims(settings, retention_days: int) -> int:
    """Delete fire claims older than the retention from the target database. Return how many."""
    from scheduler.db import create_target_engine

    engine = create_target_engine(settings, job="claims", autocommit=True, pool_size=1)
    try:
        with engine.connect() as connection:
            if not connection.execute(sqlalchemy.text("SELECT to_regclass(:name) IS NOT NULL"),
                                      {"name": CLAIMS_TABLE}).scalar_one():
                return 0
            return connection.execute(sqlalchemy.text(
                f"DELETE FROM {CLAIMS_TABLE} WHERE scheduled_for < now() - make_interval(days => :days)"),
                {"days": retention_days}).rowcount
    finally:
        engine.dispose()
