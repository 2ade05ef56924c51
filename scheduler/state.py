"""The state store: the daemon's own memory, separate from the target database.

A SQLite file by default, PostgreSQL when `state.url` says so (hosts sharing state). Each part of
the daemon that keeps state (the run ledger, alerts, locks, ...) is a *component* with its own list
of migrations; `upgrade()` brings every component to its newest version in place. A small key-value
table serves jobs that need to remember a little (log offsets, last rotation, hysteresis counters).
"""

from __future__ import annotations

import importlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import sqlalchemy
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, TypeDecorator, event, select
from sqlalchemy.engine import Connection

from scheduler.errors import StateStoreUnavailable, classify
from scheduler.redact import mask_url

metadata = MetaData()

# Modules that register state components; a missing module (not written yet) is skipped.
COMPONENT_MODULES = ["scheduler.ledger", "scheduler.locks", "scheduler.alerts", "scheduler.silences"]

Migration = Callable[[Connection], None]
_components: dict[str, list[Migration]] = {}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on SQLite (which has no time zones) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


schema_versions = Table(
    "schema_versions", metadata,
    Column("component", String(64), primary_key=True),
    Column("version", sqlalchemy.Integer, nullable=False),
    Column("upgraded_at", UTCDateTime, nullable=False),
)

kv = Table(
    "kv", metadata,
    Column("namespace", String(64), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


def register_component(name: str, migrations: list[Migration]) -> None:
    """Register a component's migrations, oldest first. Its version is len(migrations) once upgraded."""
    _components[name] = migrations


register_component("core", [lambda connection: kv.create(connection, checkfirst=True)])


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_state_path() -> Path:
    """$STATE_DIRECTORY (systemd), else /var/lib/jackpot-maint as root, else $XDG_STATE_HOME/jackpot-maint."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0]) / "state.db"
    if os.geteuid() == 0:
        return Path("/var/lib/jackpot-maint/state.db")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "jackpot-maint" / "state.db"


def state_url_from_settings(settings) -> str:
    if settings.state.url is not None:
        url = settings.state.url.get_secret_value()
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    return f"sqlite:///{default_state_path()}"


class StateStore:
    """The state store. Use StateStore.open(settings) in the daemon and the CLI."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0):
        self.url = url
        self.display = mask_url(url)
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("sqlite:///", 1)[1]
            if path and path != ":memory:":
                self.path: Path | None = Path(path)
                _prepare_sqlite_file(self.path)
            else:
                self.path = None
            self.engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                                   poolclass=sqlalchemy.pool.NullPool)

            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            @event.listens_for(self.engine, "begin")
            def _sqlite_begin_immediate(connection) -> None:  # noqa: ANN001
                # take the write lock at BEGIN, so two processes never deadlock upgrading a read lock
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            self.path = None
            self.engine = sqlalchemy.create_engine(
                url, pool_size=3, max_overflow=5, pool_pre_ping=True, hide_parameters=True,
                connect_args={"connect_timeout": max(int(connect_timeout), 1), "application_name": "jackpot-maint:state",
                              "options": "-c lock_timeout=5000 -c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000"})
        if self.is_sqlite:
            # pysqlite's own BEGIN would come first; let the event above issue it
            @event.listens_for(self.engine, "connect")
            def _no_autobegin(dbapi_connection, _record) -> None:  # noqa: ANN001
                dbapi_connection.isolation_level = None

    @classmethod
    def open(cls, settings, *, upgrade: bool = True) -> "StateStore":
        """Open and upgrade the configured state store. Raise StateStoreUnavailable (exit 3) naming it."""
        store = cls(state_url_from_settings(settings), connect_timeout=settings.database.connect_timeout)
        if upgrade:
            store.upgrade()
        return store

    def begin(self):
        return self.engine.begin()

    def connect(self):
        return self.engine.connect()

    def upgrade(self) -> None:
        """Create or upgrade every component's tables, in place. Safe to run from several processes."""
        for module in COMPONENT_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != module:
                    raise
        try:
            with self.begin() as connection:
                if not self.is_sqlite:
                    # several hosts may start at once against a shared store
                    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7423001, 1)")
                schema_versions.create(connection, checkfirst=True)
                current = dict(connection.execute(select(schema_versions.c.component, schema_versions.c.version)).all())
                for name, migrations in _components.items():
                    version = current.get(name, 0)
                    for index in range(version, len(migrations)):
                        migrations[index](connection)
                    if version < len(migrations):
                        if name in current:
                            connection.execute(schema_versions.update().where(schema_versions.c.component == name)
                                               .values(version=len(migrations), upgraded_at=utcnow()))
                        else:
                            connection.execute(schema_versions.insert().values(component=name, version=len(migrations),
                                                                               upgraded_at=utcnow()))
        except StateStoreUnavailable:
            raise
        except Exception as error:  # noqa: BLE001
            failure = classify(error, resource=f"the state store {self.display}")
            raise StateStoreUnavailable(failure.message, code=failure.code, db_code=failure.db_code,
                                        hint="check state.url and that the state store is reachable and writable") from None
        if self.path is not None:
            _tighten_permissions(self.path)

    def schema_version(self, component: str) -> int:
        with self.connect() as connection:
            value = connection.execute(select(schema_versions.c.version)
                                       .where(schema_versions.c.component == component)).scalar()
        return int(value or 0)

    # ---- key-value ---------------------------------------------------------------------------

    def get_value(self, namespace: str, key: str, default: Any = None) -> Any:
        with self.connect() as connection:
            raw = connection.execute(select(kv.c.value).where(kv.c.namespace == namespace, kv.c.key == key)).scalar()
        return default if raw is None else json.loads(raw)

    def set_value(self, namespace: str, key: str, value: Any) -> None:
        payload = json.dumps(value, default=str)
        with self.begin() as connection:
            updated = connection.execute(kv.update().where(kv.c.namespace == namespace, kv.c.key == key)
                                         .values(value=payload, updated_at=utcnow())).rowcount
            if not updated:
                connection.execute(kv.insert().values(namespace=namespace, key=key, value=payload, updated_at=utcnow()))

    def values(self, namespace: str) -> dict[str, Any]:
        with self.connect() as connection:
            rows = connection.execute(select(kv.c.key, kv.c.value).where(kv.c.namespace == namespace)).all()
        return {key: json.loads(value) for key, value in rows}

    def dispose(self) -> None:
        self.engine.dispose()


def _prepare_sqlite_file(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(descriptor)
    except OSError as error:
        raise StateStoreUnavailable(f"cannot create the state store file {path}: {error.strerror}",
                                    hint="set state.url, or run where the state directory is writable "
                                         "(StateDirectory= under systemd)") from None


def _tighten_permissions(path: Path) -> None:
    for candidate in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        try:
            os.chmod(candidate, 0o600)
        except FileNotFoundError:
            pass
