"""`jackpot-maint jobs list|run`."""

from __future__ import annotations

import argparse
import sys

from scheduler.commands._common import add_json_flag, load, print_json, print_table, progress_printer
from scheduler.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("jobs", parents=[common], help="list jobs, or run one now",
                                   description="List the jobs with their schedules and last runs, or run one on demand.")
    actions = parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="each job: enabled, schedule, scope, next three fires, last run",
                                 description="Each job: enabled, schedule (in scheduler.timezone), scope (database: once "
                                             "across hosts; host: on every host), its next three fire times, last run.")
    add_json_flag(listing)
    listing.set_defaults(handler=list_command)
    run = actions.add_parser("run", parents=[common], help="run a job now (recorded with trigger=manual)",
                             description="Run one job now, under the same lock as the daemon: if it is already "
                                         "running here or on another host, exit 4 and say where.")
    run.add_argument("name", help="the job's name (see `jobs list`)")
    run.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    run.add_argument("--repair", action="store_true", help="validate_data: apply the guide's fixes (reversible)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    add_json_flag(run)
    run.set_defaults(handler=run_command)


def list_command(args: argparse.Namespace) -> int:
    from jobs.registry import all_jobs
    from scheduler import ledger
    from scheduler.errors import JackpotError
    from scheduler.state import StateStore

    loaded = load(args)
    settings = loaded.settings
    last: dict[str, ledger.RunRecord | None] = {}
    try:
        state = StateStore.open(settings)
        try:
            for name in all_jobs():
                last[name] = ledger.last_run(state, name)
        finally:
            state.dispose()
    except JackpotError:
        last = {}
    entries = []
    for name, module in all_jobs().items():
        options = getattr(settings.jobs, name)
        run = last.get(name)
        entries.append({
            "name": name, "enabled": options.enabled, "schedule": options.schedule, "scope": module.SCOPE,
            "timeout_seconds": options.timeout, "description": module.DESCRIPTION,
            "next_fire_times": next_fire_times(settings, options.schedule, 3),
            "last_run": run.to_dict() if run else None,
        })
    if args.json:
        print_json(entries)
        return EXIT_OK
    rows = []
    for entry in entries:
        run = entry["last_run"]
        last_text = f"{run['status']} {run['started_at'][:19].replace('T', ' ')}" if run else "never"
        nxt = _fire_times_text(entry["next_fire_times"]) if entry["enabled"] else ""
        rows.append([entry["name"], "yes" if entry["enabled"] else "no", entry["schedule"], entry["scope"], nxt, last_text])
    print_table(["job", "enabled", "schedule", "scope", "next three fires", "last run"], rows)
    return EXIT_OK


def _fire_times_text(times: list[str]) -> str:
    """'2026-11-28 21:10, 21:15, 21:20': the date once, then only what changes."""
    from datetime import datetime

    parts: list[str] = []
    previous_day = None
    for text in times:
        moment = datetime.fromisoformat(text)
        with_seconds = moment.second or moment.microsecond
        clock = moment.strftime("%H:%M:%S" if with_seconds else "%H:%M")
        day = moment.strftime("%Y-%m-%d")
        parts.append(clock if day == previous_day else f"{day} {clock}")
        previous_day = day
    return ", ".join(parts)


def next_fire_times(settings, schedule: str, count: int) -> list[str]:
    """The next `count` fire times of a schedule, ISO 8601, in the scheduler's time zone."""
    try:
        from scheduler.daemon import build_trigger
    except ImportError:
        return []
    from datetime import datetime

    trigger = build_trigger(schedule, settings.scheduler.timezone)
    times: list[str] = []
    previous = None
    now = datetime.now(trigger.timezone)
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, previous or now)
        if fire is None:
            break
        times.append(fire.isoformat())
        previous = fire
    return times


def run_command(args: argparse.Namespace) -> int:
    from jobs.registry import get_job
    from scheduler.runner import run_job

    loaded = load(args)
    get_job(args.name)
    override = {}
    if args.repair:
        if args.name != "validate_data":
            from scheduler.errors import UsageError

            raise UsageError("--repair applies only to validate_data")
        override["repair"] = True
    outcome = run_job(loaded.settings, args.name, trigger="manual", dry_run=args.dry_run,
                      progress=progress_printer(not args.quiet and not args.json), options_override=override or None)
    record = outcome.record
    if args.json:
        payload = record.to_dict()
        payload["exit_code"] = outcome.exit_code
        if outcome.result is not None:
            payload["findings"] = [finding.to_dict() for finding in outcome.result.findings]
        print_json(payload)
        return outcome.exit_code
    print(f"{record.job}: {record.status}" + (f" [{record.error_code}]" if record.error_code else "")
          + (f" in {record.duration_seconds:.1f}s" if record.duration_seconds is not None else "")
          + (" (dry run)" if record.dry_run else ""))
    if record.message:
        print(f"  {record.message}", file=sys.stderr if outcome.exit_code else sys.stdout)
    for key, value in record.summary.items():
        print(f"  {key}: {value}")
    print(f"  run id: {record.id}")
    return outcome.exit_code
