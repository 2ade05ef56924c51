"""Target database access with safe defaults.

Every connection carries application_name, a connect timeout and lock_timeout / statement_timeout /
idle_in_transaction_session_timeout as connection options (libpq `options`): `SET LOCAL` does nothing
in autocommit and a session `SET` leaks to the next user of a pooled connection.
"""

from __future__ import annotations

import re
from typing import Callable

import sqlalchemy
from sqlalchemy import event

from scheduler.errors import classify


def connection_options(lock_timeout: float, statement_timeout: float, idle_timeout: float) -> str:
    """Given timeouts in seconds, return the libpq `options` string that sets them for a session."""
    def ms(seconds: float) -> int:
        return max(int(round(seconds * 1000)), 0)

    return (f"-c lock_timeout={ms(lock_timeout)} -c statement_timeout={ms(statement_timeout)} "
            f"-c idle_in_transaction_session_timeout={ms(idle_timeout)}")


def create_target_engine(settings, *, job: str | None = None, statement_timeout: float | None = None,
                         lock_timeout: float | None = None, autocommit: bool = False,
                         on_connect: Callable[[int], None] | None = None, pool_size: int = 2) -> sqlalchemy.Engine:
    """Given settings, return an Engine for the target database with the daemon's session defaults.

    statement_timeout / lock_timeout override the configured ones for this engine (VACUUM needs longer).
    on_connect receives each new connection's backend pid (so a timeout can cancel its queries).
    """
    database = settings.database
    name = database.application_name + (f":{job}" if job else "")
    connect_args = {
        "connect_timeout": max(int(round(database.connect_timeout)), 1),
        "application_name": name[:63],
        "options": connection_options(
            database.lock_timeout if lock_timeout is None else lock_timeout,
            database.statement_timeout if statement_timeout is None else statement_timeout,
            database.idle_in_transaction_timeout,
        ),
    }
    engine = sqlalchemy.create_engine(
        settings.database_url(), connect_args=connect_args, pool_size=pool_size, max_overflow=2,
        pool_pre_ping=True, pool_recycle=1800, hide_parameters=True,
        isolation_level="AUTOCOMMIT" if autocommit else None,
    )
    if on_connect is not None:
        @event.listens_for(engine, "connect")
        def _remember_backend(dbapi_connection, _record) -> None:  # noqa: ANN001
            on_connect(dbapi_connection.info.backend_pid)
    return engine


def check_connection(engine: sqlalchemy.Engine, resource: str = "the target database") -> None:
    """Connect once; raise ConnectionFailed (J001, exit 3) naming the resource when it cannot."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as error:  # noqa: BLE001 - classified below
        raise classify(error, resource=resource) from None


def cancel_backends(settings, pids: set[int]) -> int:
    """Cancel the running queries of the given backend pids (a job past its timeout). Return how many."""
    if not pids:
        return 0
    engine = create_target_engine(settings, job="cancel", autocommit=True, pool_size=1)
    try:
        with engine.connect() as connection:
            cancelled = connection.execute(
                sqlalchemy.text("SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM unnest(CAST(:pids AS int[])) AS pid"),
                {"pids": sorted(pids)},
            ).scalar_one()
        return int(cancelled or 0)
    finally:
        engine.dispose()


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def split_table(name: str) -> tuple[str, str]:
    """Given 'jackpots' or 'games.jackpots' (already validated), return (schema, table); schema 'public' by default."""
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def quote_identifier(name: str) -> str:
    """Quote one identifier. Raise ValueError for anything that is not a plain identifier."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid SQL identifier")
    return '"' + name + '"'


def quote_table(name: str) -> str:
    """Given 'games.jackpots', return '"games"."jackpots"'; reject anything else (see config.types)."""
    schema, table = split_table(name)
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"
