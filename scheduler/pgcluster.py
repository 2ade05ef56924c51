"""A throwaway PostgreSQL cluster: initdb into a temp dir, start on a loopback port, remove at the end.

Used by the test suite and by `jackpot-maint demo`. PostgreSQL refuses to run as root, so as root
the cluster runs as an unprivileged user (nobody, or $JACKPOT_PG_USER).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"


def find_bindir() -> Path:
    """Return the directory holding initdb/pg_ctl. Raise FileNotFoundError saying what to install."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, "initdb")) and os.path.exists(os.path.join(candidate, "pg_ctl")):
            return Path(candidate)
    raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
                            "(Debian/Ubuntu: apt-get install postgresql) or set PG_BINDIR")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """A running throwaway cluster. Use as a context manager, or start()/stop()."""

    def __init__(self, *, password: str = "pg-test-secret-9f3a", port: int | None = None,
                 extra_settings: dict[str, str] | None = None):
        self.password = password
        self.port = port or free_port()
        self.bindir = find_bindir()
        self.extra_settings = extra_settings or {}
        self.base = Path(tempfile.mkdtemp(prefix="jackpot-pg-"))
        self.datadir = self.base / "data"
        self.socketdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.run_as = self._unprivileged_user() if os.geteuid() == 0 else None

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd:
        name = os.environ.get("JACKPOT_PG_USER", "nobody")
        return pwd.getpwnam(name)

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        extra = {}
        if self.run_as is not None:
            extra = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        env = dict(os.environ, LC_ALL="C", LANG="C")
        env.pop("PGPASSWORD", None)
        return subprocess.run(args, check=True, capture_output=True, text=True, env=env, cwd=str(self.base), **extra, **kwargs)

    def start(self) -> "PostgresCluster":
        self.socketdir.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            for path in (self.base, self.socketdir, pwfile):
                os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        os.chmod(self.base, 0o700)
        try:
            self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                       "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-instructions"])
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed: {error.stderr or error.stdout}") from None
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.socketdir}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100",
            "shared_buffers": "128MB", "logging_collector": "off", "log_min_messages": "warning",
        }
        settings.update(self.extra_settings)
        with open(self.datadir / "postgresql.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self.pg_ctl_start()
        return self

    def pg_ctl_start(self) -> None:
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start"])
        except subprocess.CalledProcessError as error:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {error.stderr}\n{log[-2000:]}") from None

    def pg_ctl_stop(self, mode: str = "fast") -> None:
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"])
        except subprocess.CalledProcessError:
            pass

    @property
    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        password = self.password if password is None else password
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def psql_url(self, database: str = "postgres") -> str:
        return self.url(database)

    def execute(self, sql: str, database: str = "postgres", autocommit: bool = True) -> list[tuple]:
        """Run SQL as the superuser and return the rows (for set-up, not for the product's own work)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=autocommit) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.running:
            self.pg_ctl_stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
