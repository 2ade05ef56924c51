"""`jackpot-maint history`: what ran, when, and how it ended."""

from __future__ import annotations

import argparse

from scheduler.commands._common import add_json_flag, load, print_json, print_table
from scheduler.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("history", parents=[common], help="show recent runs from the ledger",
                                   description="Show recent runs (scheduled, manual, caught up, skipped, missed), newest first.")
    parser.add_argument("--job", metavar="NAME", help="only this job")
    parser.add_argument("--status", metavar="STATUS", help="only runs with this status (ok, problems, failed, skipped, missed, abandoned, ...)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (default 20)")
    add_json_flag(parser)
    parser.set_defaults(handler=history_command)


def history_command(args: argparse.Namespace) -> int:
    from jobs.registry import get_job
    from scheduler import ledger
    from scheduler.state import StateStore

    loaded = load(args)
    if args.job:
        get_job(args.job)  # unknown name: lists the known ones
    state = StateStore.open(loaded.settings)
    try:
        runs = ledger.list_runs(state, job=args.job, limit=max(args.limit, 1), status=args.status)
    finally:
        state.dispose()
    if args.json:
        print_json([run.to_dict() for run in runs])
        return EXIT_OK
    if not runs:
        print("no runs recorded yet")
        return EXIT_OK
    rows = []
    for run in runs:
        duration = f"{run.duration_seconds:.1f}s" if run.duration_seconds is not None else ""
        detail = run.message or ", ".join(f"{k}={v}" for k, v in list(run.summary.items())[:4] if not isinstance(v, (dict, list)))
        rows.append([run.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), run.job, run.trigger, run.status,
                     run.error_code or "", duration, run.host, (detail or "")[:80], run.id[:8]])
    print_table(["started", "job", "trigger", "status", "code", "took", "host", "detail", "run"], rows)
    return EXIT_OK
