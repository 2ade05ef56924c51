"""Error codes and the exceptions that carry them.

The guide's application codes (J001-J008) say what went wrong for an operator; the database codes
(DB001-DB008) say which PostgreSQL condition caused it. Every expected failure is a JackpotError
with a code, a message that names the resource, and a hint saying what to do. Exit codes are the
CLI's contract with scripts and are documented in the README.
"""

from __future__ import annotations

from typing import Any

# Exit codes, for every command.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the job ran and found problems, or failed
EXIT_USAGE = 2  # bad usage or invalid configuration
EXIT_UNREACHABLE = 3  # a dependency (target database, state store) is unreachable
EXIT_LOCKED = 4  # skipped: the same job is already running

APPLICATION_CODES = {
    "J001": "Database connection failed",
    "J002": "Version conflict",
    "J003": "Invalid jackpot amount",
    "J004": "Configuration error",
    "J005": "Migration failed",
    "J006": "Performance timeout",
    "J007": "Memory/resource limit exceeded",
    "J008": "Cache unavailable",
}

DATABASE_CODES = {
    "DB001": "Connection refused",
    "DB002": "Duplicate key",
    "DB003": "Foreign key violation",
    "DB004": "Check constraint violation",
    "DB005": "Serialization failure",
    "DB006": "Deadlock detected",
    "DB007": "Query timeout",
    "DB008": "Disk space full",
}

# SQLSTATE -> (database code, application code). The guide's table lists 08006 for a query timeout
# and 53200 for a full disk; PostgreSQL says 57014 (query_canceled) and 53100 (disk_full).
SQLSTATE_CODES: dict[str, tuple[str | None, str]] = {
    "08000": ("DB001", "J001"),
    "08001": ("DB001", "J001"),
    "08003": ("DB001", "J001"),
    "08004": ("DB001", "J001"),
    "08006": ("DB001", "J001"),
    "57P01": ("DB001", "J001"),  # admin_shutdown
    "57P02": ("DB001", "J001"),  # crash_shutdown
    "57P03": ("DB001", "J001"),  # cannot_connect_now
    "28000": ("DB001", "J001"),  # invalid_authorization_specification
    "28P01": ("DB001", "J001"),  # invalid_password
    "3D000": ("DB001", "J001"),  # invalid_catalog_name: database does not exist
    "23505": ("DB002", "J002"),
    "23503": ("DB003", "J003"),
    "23514": ("DB004", "J003"),
    "40001": ("DB005", "J002"),
    "40P01": ("DB006", "J002"),
    "57014": ("DB007", "J006"),  # query_canceled: statement_timeout or cancellation
    "55P03": ("DB007", "J006"),  # lock_not_available: lock_timeout
    "25P03": ("DB007", "J006"),  # idle_in_transaction_session_timeout
    "53100": ("DB008", "J007"),  # disk_full
    "53200": (None, "J007"),  # out_of_memory
    "53300": ("DB001", "J007"),  # too_many_connections
    "42501": (None, "J004"),  # insufficient_privilege
    "42P01": (None, "J005"),  # undefined_table
    "42703": (None, "J005"),  # undefined_column
    "3F000": (None, "J005"),  # invalid_schema_name
}


class JackpotError(Exception):
    """An expected failure: a code, a message naming the resource, and what to do about it."""

    exit_code = EXIT_PROBLEMS
    default_code = "J005"

    def __init__(self, message: str, *, code: str | None = None, db_code: str | None = None,
                 hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.db_code = db_code
        self.hint = hint
        self.details = details or {}

    @property
    def codes(self) -> str:
        return "/".join(code for code in (self.code, self.db_code) if code)

    def __str__(self) -> str:
        text = f"{self.codes}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(JackpotError):
    exit_code = EXIT_USAGE
    default_code = "J004"


class ConfigError(JackpotError):
    """Invalid configuration. `problems` lists every problem found, each naming key and source."""

    exit_code = EXIT_USAGE
    default_code = "J004"

    def __init__(self, message: str, problems: list[str] | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.problems = problems or [message]


class ConnectionFailed(JackpotError):
    """The target database cannot be reached (as opposed to: reached, and the SQL failed)."""

    exit_code = EXIT_UNREACHABLE
    default_code = "J001"


class StateStoreUnavailable(JackpotError):
    exit_code = EXIT_UNREACHABLE
    default_code = "J001"


class DatabaseError(JackpotError):
    """The database answered, and the statement failed."""

    exit_code = EXIT_PROBLEMS
    default_code = "J005"


class JobTimeout(JackpotError):
    exit_code = EXIT_PROBLEMS
    default_code = "J006"


class JobCancelled(JackpotError):
    exit_code = EXIT_PROBLEMS
    default_code = "J006"


class JobLocked(JackpotError):
    """The same job is already running, here or on another host."""

    exit_code = EXIT_LOCKED
    default_code = "J002"


class ResourceLimit(JackpotError):
    """Not enough disk or memory to proceed safely."""

    exit_code = EXIT_PROBLEMS
    default_code = "J007"


def sqlstate_of(exc: BaseException) -> str | None:
    """Given an exception from SQLAlchemy or psycopg, return its SQLSTATE, or None."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if state:
            return state
        original = getattr(current, "orig", None)
        current = original if original is not None else current.__cause__
    return None


def classify(exc: BaseException, *, resource: str = "the target database") -> JackpotError:
    """Given any exception, return the JackpotError that describes it for an operator.

    Connection failures (no SQLSTATE, or class 08 / 28 / 57P0x) become ConnectionFailed (exit 3);
    other SQL failures become DatabaseError with the DB/J codes from the SQLSTATE.
    """
    from scheduler.redact import redact

    if isinstance(exc, JackpotError):
        return exc
    import sqlalchemy.exc

    text = redact(_first_line(exc))
    state = sqlstate_of(exc)
    if state is not None:
        db_code, app_code = SQLSTATE_CODES.get(state, (None, "J005"))
        if app_code == "J001":
            return ConnectionFailed(f"cannot connect to {resource}: {text} [SQLSTATE {state}]",
                                    db_code=db_code, hint="check that the database is running and the URL, user and password")
        if state == "42501":
            return DatabaseError(f"permission denied on {resource}: {text} [SQLSTATE {state}]", code="J004",
                                 hint="grant the privilege named above to the configured role; see `jackpot-maint db check`")
        if state in ("57014", "55P03", "25P03"):
            return DatabaseError(f"statement cancelled on {resource}: {text} [SQLSTATE {state}]",
                                 code=app_code, db_code=db_code,
                                 hint="a timeout or a lock held by the service; it will be retried")
        if state == "53100":
            return ResourceLimit(f"disk full on {resource}: {text} [SQLSTATE {state}]", db_code=db_code,
                                 hint="free disk space on the database host")
        return DatabaseError(f"SQL failed on {resource}: {text} [SQLSTATE {state}]", code=app_code, db_code=db_code)
    if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or _is_psycopg_operational(exc):
        return ConnectionFailed(f"cannot connect to {resource}: {text}", db_code="DB001",
                                hint="check that the database is running and the URL, user and password")
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return ConnectionFailed(f"connection pool timed out for {resource}: {text}", code="J006")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return ResourceLimit(f"no space left on device: {text}", hint="free disk space")
    if isinstance(exc, MemoryError):
        return ResourceLimit("out of memory", hint="lower the batch size or raise the memory limit")
    return JackpotError(f"unexpected error: {type(exc).__name__}: {text}", code="J005")


def _is_psycopg_operational(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.OperationalError)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    # SQLAlchemy appends the statement and a documentation link; keep the cause.
    for marker in ("\n[SQL:", "\n(Background on this error"):
        text = text.split(marker)[0]
    return " ".join(text.split())
