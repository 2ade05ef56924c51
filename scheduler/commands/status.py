"""`jackpot-maint status`: is a daemon running on this host, since when, its jobs' last and next runs,
open alerts. The exit code follows health, for scripts and monitoring:

  0  a daemon runs here, every enabled job's last run went well, no alert is open
  1  a daemon runs here, but something needs attention: a job's last run failed, was missed or
     abandoned; the target database is unreachable; or alerts are open
  2  the configuration is invalid
  3  no daemon runs on this host (or the state store cannot be read)
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

from scheduler.commands._common import add_json_flag, load, print_json, print_table
from scheduler.errors import EXIT_OK, EXIT_PROBLEMS, EXIT_UNREACHABLE
from scheduler.ledger import pid_alive

UNHEALTHY_STATUSES = ("failed", "missed", "abandoned", "cancelled")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "status", parents=[common], help="is the daemon running here; each job's last and next run; open alerts",
        description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_flag(parser)
    parser.set_defaults(handler=status_command)


def status_command(args: argparse.Namespace) -> int:
    from jobs.registry import all_jobs
    from scheduler import ledger
    from scheduler.commands.jobs import next_fire_times
    from scheduler.daemon import HEARTBEAT_NAMESPACE, open_alerts
    from scheduler.errors import JackpotError
    from scheduler.state import StateStore

    settings = load(args).settings
    host = ledger.hostname()
    pid_info = read_pid_file()
    try:
        state = StateStore.open(settings)
    except JackpotError as error:
        payload = {"host": host, "daemon": {"running": bool(pid_info), **(pid_info or {})},
                   "error": str(error), "healthy": False}
        if args.json:
            print_json(payload)
        else:
            print(f"state store unreachable: {error}")
        return EXIT_UNREACHABLE
    try:
        heartbeat = state.get_value(HEARTBEAT_NAMESPACE, host) or {}
        jobs = []
        for name, module in all_jobs().items():
            options = getattr(settings.jobs, name)
            last = ledger.last_run(state, name, statuses=("ok", "problems", "failed", "cancelled", "abandoned",
                                                           "missed", "running"))
            # schedules are deterministic (intervals anchored to a fixed epoch): the same fire the daemon computes
            upcoming = next_fire_times(settings, options.schedule, 1) if options.enabled else []
            next_run = upcoming[0] if upcoming else None
            jobs.append({"name": name, "enabled": options.enabled, "scope": module.SCOPE, "schedule": options.schedule,
                         "last_run": last.to_dict() if last else None, "next_run": next_run if options.enabled else None})
        alerts = open_alerts(settings, state)
    finally:
        state.dispose()

    running = _alive(heartbeat, pid_info)
    daemon = {"running": running, "pid": (pid_info or heartbeat).get("pid") if running else None,
              "started_at": (pid_info or heartbeat).get("started_at") if running else None,
              "heartbeat_at": heartbeat.get("heartbeat_at"), "state": heartbeat.get("state"),
              "target_database": heartbeat.get("target_database") if running else None,
              "version": heartbeat.get("version")}
    problems = []
    for job in jobs:
        if job["enabled"] and job["last_run"] and job["last_run"]["status"] in UNHEALTHY_STATUSES:
            problems.append(f"{job['name']}: last run {job['last_run']['status']}")
    if daemon["target_database"] == "down":
        problems.append("the target database is unreachable")
    if alerts:
        problems.append(f"{len(alerts)} open alert(s)")
    code = EXIT_UNREACHABLE if not running else EXIT_PROBLEMS if problems else EXIT_OK
    payload = {"host": host, "daemon": daemon, "jobs": jobs, "open_alerts": alerts, "problems": problems,
               "healthy": code == EXIT_OK, "exit_code": code}
    if args.json:
        print_json(payload)
        return code
    if running:
        print(f"daemon: running on {host}, pid {daemon['pid']}, since {_local(daemon['started_at'])}"
              f"; target database {daemon['target_database'] or 'unknown'}")
    else:
        last_seen = f" (last heartbeat {_local(heartbeat.get('heartbeat_at'))}, {heartbeat.get('state')})" if heartbeat else ""
        print(f"daemon: NOT running on {host}{last_seen}")
    rows = []
    for job in jobs:
        last = job["last_run"]
        rows.append([job["name"], "yes" if job["enabled"] else "no", job["scope"], job["schedule"],
                     f"{last['status']} {_local(last['started_at'])}" if last else "never",
                     _local(job["next_run"]) if job["next_run"] else ""])
    print_table(["job", "enabled", "scope", "schedule", "last run", "next run"], rows)
    if alerts is None:
        print("alerts: (alerting not available)")
    else:
        print(f"alerts: {len(alerts)} open")
        for alert in alerts[:20]:
            print(f"  #{alert.get('id')} [{alert.get('severity')}] {alert.get('title')} ({alert.get('status')})")
    for problem in problems:
        print(f"attention: {problem}")
    return code


def read_pid_file() -> dict[str, Any] | None:
    """The pid file of a daemon on this host, if one is alive ($RUNTIME_DIRECTORY, /run/jackpot-maint,
    or the per-user runtime folder)."""
    from scheduler.daemon import PID_FILE
    from scheduler.locks import runtime_directory

    candidates = [runtime_directory() / PID_FILE]
    if "/run/jackpot-maint" not in str(candidates[0]):
        from pathlib import Path

        candidates.append(Path("/run/jackpot-maint") / PID_FILE)
    for path in candidates:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            continue
        pid = info.get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            return info
    return None


def _alive(heartbeat: dict[str, Any], pid_info: dict[str, Any] | None) -> bool:
    if pid_info:
        return True
    if not heartbeat or heartbeat.get("state") == "stopped":
        return False
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(heartbeat["heartbeat_at"])).total_seconds()
    except (KeyError, ValueError, TypeError):
        return False
    # another runtime directory (e.g. systemd's, seen from a shell): trust a fresh heartbeat of a live pid
    fresh = age < 3 * float(heartbeat.get("heartbeat_interval") or 30) + 5
    return fresh and isinstance(heartbeat.get("pid"), int) and pid_alive(heartbeat["pid"])


def _local(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value
