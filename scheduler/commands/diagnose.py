"""`jackpot-maint diagnose`: the guide's critical-issue diagnostic as one command.

Every monitor check once, now, without hysteresis: a table with a mark per check, the value, the
threshold and a one-line hint from the guide's resolution steps (or JSON). Exit 0 when all is well,
1 on warnings (or a check that could not be measured), 2 on anything critical. It needs neither the
daemon nor its state store: remembered values (the daemon's memory samples, deadlock count) are
read when the store is there and never written.
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import datetime, timezone

from scheduler.commands._common import add_json_flag, load, print_json, print_table

EXIT_ALL_OK = 0
EXIT_WARNINGS = 1
EXIT_CRITICAL = 2


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "diagnose", parents=[common], help="run every health check once, now, and show what is wrong",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every monitor check once, now (no hysteresis): host CPU/memory/disk, the service's\n"
                    "endpoints, process and log, and the database (connections, long queries, locks, dead tuples,\n"
                    "wraparound, cache hit ratio, deadlocks). Works without the daemon running.",
        epilog="exit codes:\n  0  every check ok\n  1  warnings, or a check that could not be measured\n"
               "  2  at least one critical check\n  (2 also for invalid configuration)")
    parser.add_argument("--no-state", action="store_true",
                        help="do not open the state store (the daemon's remembered samples are not used)")
    add_json_flag(parser)
    parser.set_defaults(handler=diagnose_command)


def exit_code_for(states: list[str]) -> int:
    """Given check states, return 2 if any is critical, 1 if any is warning or unknown, else 0."""
    if "critical" in states:
        return EXIT_CRITICAL
    if "warning" in states or "unknown" in states:
        return EXIT_WARNINGS
    return EXIT_ALL_OK


def diagnose_command(args: argparse.Namespace) -> int:
    from jobs.checks import info_for
    from jobs.monitor import run_checks
    from scheduler.state import StateStore

    settings = load(args).settings
    state = None
    state_note = "state store not used (--no-state)"
    if not args.no_state:
        try:
            state = StateStore.open(settings, upgrade=False)  # read only: no schema changes either
            state_note = f"state store {state.display} (read only)"
        except Exception as error:  # noqa: BLE001 - diagnose works without it
            state_note = f"state store unavailable, stateful checks start fresh: {error}"
    host = socket.gethostname()
    checked_at = datetime.now(timezone.utc)
    try:
        results = run_checks(settings, state=state, host=host, persist=False)
    finally:
        if state is not None:
            state.dispose()
    states = [result.state for result in results]
    code = exit_code_for(states)
    counts = {name: states.count(name) for name in ("ok", "warning", "critical", "unknown")}
    if args.json:
        checks = []
        snapshot = None
        for result in results:
            info = info_for(result.name)
            data = result.to_dict()
            snapshot = data.get("details", {}).pop("snapshot", snapshot)  # once, below, not per check
            data.update({"label": info.label, "hint": info.hint, "category": info.category, "code": info.code,
                         "scope": info.scope})
            checks.append(data)
        print_json({"host": host, "checked_at": checked_at.isoformat(timespec="seconds"), "exit_code": code,
                    "state_store": state_note, "counts": counts, "checks": checks, "database_snapshot": snapshot})
        return code

    marks = _marks()
    print(f"=== jackpot-maint diagnose: {host}, {checked_at.isoformat(timespec='seconds')} ===")
    print(f"database {settings.database_display()}, service {settings.service.base_url}; {state_note}")
    print()
    rows = []
    for result in results:
        info = info_for(result.name)
        rows.append([marks[result.state], result.name, result.value_text(), result.threshold_text(),
                     info.hint if result.state != "ok" else _shorten(result.message, 70)])
    print_table(["", "check", "value", "threshold", "hint (for failing checks) / measurement"], rows)
    failing = [result for result in results if result.state != "ok"]
    if failing:
        print()
        print("What was measured:")
        for result in failing:
            print(f"  {marks[result.state]} {result.name}: {result.message}")
            for line in result.details.get("lines", [])[:5]:
                print(f"      {line}")
            for line in result.evidence:
                print(f"      | {line}")
    print()
    verdict = {EXIT_ALL_OK: "all checks ok", EXIT_WARNINGS: "warnings", EXIT_CRITICAL: "CRITICAL"}[code]
    print(f"{verdict}: {counts['ok']} ok, {counts['warning']} warning, {counts['critical']} critical, "
          f"{counts['unknown']} unknown (exit {code})")
    return code


def _marks() -> dict[str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if "utf" in encoding:
        return {"ok": "✔", "warning": "▲", "critical": "✖", "unknown": "?"}
    return {"ok": "ok", "warning": "WARN", "critical": "CRIT", "unknown": "?"}


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
