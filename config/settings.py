"""The settings model: every key jackpot-maint understands, its default and its meaning.

Unknown keys are errors everywhere (extra="forbid"): a typo must never pass silently. Each field's
description is its one line of meaning in the README's configuration reference and the example file.
Job sections (`jobs.<name>`) are the Options models of the job modules, collected from the registry.
"""

from __future__ import annotations

import os
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.alerting import AlertsSettings, NotifierSettings
from config.daemon import SchedulerSettings
from config.service import ServiceSettings
from config.types import Duration, TableName


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+|/[^\s]*)$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseSettings(Section):
    url: SecretStr | None = Field(None, description="Target database URL, postgresql://user:password@host:5432/name. "
                                  "When unset, built from host/port/name/user/password")
    host: str = Field("localhost", description="Database host (used when url is unset); JACKPOT_DB_HOST")
    port: int = Field(5432, ge=1, le=65535, description="Database port (used when url is unset); JACKPOT_DB_PORT")
    name: str = Field("jackpot_db", description="Database name (used when url is unset); JACKPOT_DB_NAME")
    user: str = Field("jackpot_user", description="Database role (used when url is unset); JACKPOT_DB_USER")
    password: SecretStr | None = Field(None, description="Database password (used when url has none); JACKPOT_DB_PASSWORD")
    password_file: str | None = Field(None, description="File holding the password, e.g. a systemd credential; "
                                      "default $CREDENTIALS_DIRECTORY/db-password when present")
    table: TableName = Field("jackpots", description="The service's jackpots table, optionally schema-qualified (games.jackpots)")
    connect_timeout: Duration = Field(5.0, description="Give up connecting after this long")
    lock_timeout: Duration = Field(2.0, description="lock_timeout of every statement: never wait longer on the service's locks")
    statement_timeout: Duration = Field(60.0, description="statement_timeout of every statement")
    idle_in_transaction_timeout: Duration = Field(60.0, description="idle_in_transaction_session_timeout of every session")
    application_name: str = Field("jackpot-maint", description="application_name of the daemon's sessions (the monitor excludes them)")

    @field_validator("url", mode="before")
    @classmethod
    def _url_parses(cls, value: object) -> object:
        if value is None:
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            raise ValueError("expected a postgresql:// URL")
        from scheduler.redact import mask_url

        if not text.strip():
            raise ValueError("empty value: unset it, or give a URL like postgresql://user:password@host:5432/name")
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(text)
            parsed.port  # noqa: B018 - parsing the port raises on garbage
            split = urlsplit(text)
            split.port  # noqa: B018 - raises ValueError on a bad port or bracket
            if parsed.host and not _HOST.match(parsed.host):
                raise ValueError(parsed.host)
        except (ArgumentError, ValueError):
            raise ValueError(f"cannot parse {mask_url(text)!r} as a URL like postgresql://user:password@host:5432/name") from None
        if not parsed.drivername.startswith("postgres"):
            raise ValueError(f"{mask_url(text)!r} is not a PostgreSQL URL: it must start with postgresql://")
        if not parsed.database:
            raise ValueError(f"{mask_url(text)!r} names no database: add /name at the end")
        return text


class StateSettings(Section):
    url: SecretStr | None = Field(None, description="State store URL: sqlite:///path or postgresql://...; default a SQLite "
                                  "file in $STATE_DIRECTORY, /var/lib/jackpot-maint (root) or $XDG_STATE_HOME/jackpot-maint")
    retention_days: int = Field(90, ge=1, description="Keep run history (and resolved alerts) this many days")


class LoggingSettings(Section):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Log level; JACKPOT_LOG_LEVEL")
    format: Literal["auto", "human", "json"] = Field("auto", description="auto: human on a terminal, else human without colour; json: JSON lines")
    file: str | None = Field(None, description="Also write the daemon's own log to this file (rotated by loguru)")
    file_rotation: str = Field("50 MB", description="Rotate the daemon's own log file at this size")
    file_retention: int = Field(7, ge=1, description="Keep this many rotated daemon log files")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def _jobs_model() -> type[BaseModel]:
    from jobs.registry import all_jobs

    fields = {name: (module.Options, Field(default_factory=module.Options, description=module.DESCRIPTION))
              for name, module in all_jobs().items()}
    return create_model("JobsSettings", __config__=ConfigDict(extra="forbid", validate_default=True), **fields)


JobsSettings = _jobs_model()


class Settings(BaseSettings):
    """The whole configuration. Load it with config.loader.load_settings(), which records sources."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="JACKPOT_", env_nested_delimiter="__",
                                      validate_default=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    notifiers: dict[str, NotifierSettings] = Field(default_factory=dict)
    jobs: JobsSettings = Field(default_factory=JobsSettings)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        return self

    # ---- derived values -------------------------------------------------------------------

    def database_password(self) -> str | None:
        """The password from url, password, password_file or $CREDENTIALS_DIRECTORY/db-password."""
        from sqlalchemy.engine import make_url

        if self.database.url is not None:
            parsed = make_url(self.database.url.get_secret_value())
            if parsed.password:
                return str(parsed.password)
        if self.database.password is not None:
            return self.database.password.get_secret_value()
        path = self.database.password_file
        if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
            candidate = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], "db-password")
            path = candidate if os.path.exists(candidate) else None
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read().strip() or None
            except OSError as error:
                from scheduler.errors import ConfigError

                raise ConfigError(f"At 'database.password_file': cannot read {path}: {error.strerror}",
                                  hint="check the path and that the daemon's user may read it") from None
        return None

    def database_url(self) -> str:
        """The full SQLAlchemy URL (psycopg 3 driver) of the target database, password included."""
        from sqlalchemy.engine import URL, make_url

        if self.database.url is not None:
            url = make_url(self.database.url.get_secret_value())
        else:
            url = URL.create("postgresql", username=self.database.user, host=self.database.host,
                             port=self.database.port, database=self.database.name)
        password = self.database_password()
        if password and not url.password:
            url = url.set(password=password)
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)

    def database_display(self) -> str:
        """The target database as host:port/name for messages (never the password)."""
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url())
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
