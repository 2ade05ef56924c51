"""`jackpot-maint demo`: what a newcomer runs first must work, tell a clear story, and clean up."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

from conftest import ROOT, clean_env


def _demo_dirs() -> set[str]:
    import tempfile

    return set(glob.glob(os.path.join(tempfile.gettempdir(), "jackpot-demo-*")))


def _postgres_running_in(base: str) -> bool:
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as handle:
                text = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in text and base in text:
            return True
    return False


def test_demo_runs_the_daemon_and_tells_what_it_found_fixed_and_alerted_then_cleans_up():
    before = _demo_dirs()
    result = subprocess.run([sys.executable, "-m", "scheduler", "demo", "--seconds", "24", "--rows", "300"],
                            capture_output=True, text=True, env=clean_env(), timeout=180, cwd=str(ROOT))
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    assert "started the daemon" in output
    assert re.search(r"validate_data\s+PROBLEMS \[J003\]", output), output[-3000:]
    assert re.search(r"trim_history\s+\w+: trimmed \d+", output)
    assert "ALERT FIRING" in output and "Service down" in output
    assert "ALERT RESOLVED" in output
    assert "the daemon stopped cleanly (exit 0)" in output
    assert "=== summary ===" in output and "repairs revert" in output
    assert _demo_dirs() == before, "the demo left its temp folder behind"


def test_demo_interrupted_by_sigterm_stops_everything_and_removes_its_files():
    before = _demo_dirs()
    process = subprocess.Popen([sys.executable, "-m", "scheduler", "demo", "--seconds", "120", "--rows", "100"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(), cwd=str(ROOT))
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "started the daemon" in line:
            break
    new_dirs = _demo_dirs() - before
    assert new_dirs, "".join(lines)
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(lines) + rest
    assert "interrupted: cleaning up" in rest
    assert _demo_dirs() == before
    for base in new_dirs:
        assert not _postgres_running_in(base)
