"""The daemon's own log file (logging.file): loguru rotates it by size, keeps logging.file_retention
rotated files, and no secret reaches it, not even inside a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Tr0ub4dor-and-3-horses"
TOKEN = "T0K3N4notifier9xYz"


def _run_daemon_logging(tmp_path: Path, config: str, script: str) -> subprocess.CompletedProcess:
    """Load a real config file the way every command does (scheduler.commands._common.load), then
    run `script` in that process; the daemon's log file goes where the config says."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(config)
    program = textwrap.dedent(f"""
        import argparse
        from loguru import logger
        from scheduler.commands._common import load
        load(argparse.Namespace(config={str(config_path)!r}))
    """) + textwrap.dedent(script)
    env = {key: value for key, value in os.environ.items() if not key.startswith("JACKPOT_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)


def test_the_daemons_log_file_is_rotated_by_loguru_and_keeps_retention_files(tmp_path):
    log = tmp_path / "daemon" / "jackpot-maint.log"
    completed = _run_daemon_logging(
        tmp_path,
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n\n'
        f'[logging]\nfile = "{log}"\nfile_rotation = "4 KB"\nfile_retention = 3\n',
        """
        for number in range(400):
            logger.info("maintenance line {:04d} padding padding padding", number)
        """)
    assert completed.returncode == 0, completed.stderr
    files = sorted(path.name for path in log.parent.iterdir())
    rotated = [name for name in files if name != log.name]
    assert log.name in files
    assert len(rotated) == 3, files  # 400 lines of ~90 bytes rotate ~9 times; 3 are kept
    assert all(name.startswith("jackpot-maint.") and name.endswith(".log") for name in rotated)
    for path in log.parent.iterdir():
        assert path.stat().st_size <= 4096 + 200, path  # each file stops near file_rotation
    assert "maintenance line 0399" in log.read_text()  # the newest line is in the current file


def test_no_secret_reaches_the_daemons_log_file_even_in_a_traceback(tmp_path):
    log = tmp_path / "jackpot-maint.log"
    completed = _run_daemon_logging(
        tmp_path,
        f'[database]\nurl = "postgresql://maint:{PASSWORD}@db.example:5432/jackpot_db"\n\n'
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n\n'
        f'[notifiers.oncall]\nurls = ["json://hooks.example/{TOKEN}"]\n\n'
        f'[logging]\nlevel = "DEBUG"\nfile = "{log}"\nfile_rotation = "2 KB"\nfile_retention = 5\n',
        f"""
        for number in range(40):
            logger.debug("connecting with postgresql://maint:{PASSWORD}@db.example/jackpot_db attempt {{}}", number)
            logger.warning("notifier json://hooks.example/{TOKEN} answered 500")
        try:
            raise RuntimeError("password={PASSWORD} rejected")
        except RuntimeError:
            logger.exception("login failed")
        """)
    assert completed.returncode == 0, completed.stderr
    files = list(tmp_path.glob("jackpot-maint*.log"))
    assert len(files) > 1  # it rotated
    text = "".join(path.read_text() for path in files)
    assert "login failed" in text and "RuntimeError" in text and "attempt 39" in text
    assert PASSWORD not in text and TOKEN not in text
    assert "***" in text
