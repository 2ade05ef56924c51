"""`jackpot-maint repairs list|show|revert`: what validate_data --repair changed, and how to undo it."""

from __future__ import annotations

import argparse
import json

from scheduler.commands._common import add_json_flag, load, print_json, print_table
from scheduler.errors import EXIT_OK, EXIT_PROBLEMS

EPILOG = """exit codes:
  0  success (revert: every row of the run is reverted)
  1  revert: some rows could not be reverted (the service changed them since the repair, holds them
     locked, or deleted them); they are listed, untouched
  2  unknown run id, bad usage or invalid configuration
  3  the target database is unreachable
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "repairs", parents=[common], help="list, show or revert what validate_data --repair changed",
        description="Every value validate_data --repair changes is recorded in jackpot_maint.repair_audit "
                    "(row, column, old and new value, rule, run id, time). List the repair runs, show one, or "
                    "revert one: rows the service has not changed since are restored exactly.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    actions = parser.add_subparsers(dest="repairs_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="repair runs, newest first",
                                 description="The runs of validate_data --repair that changed something, newest "
                                             "first: table, rows, values, rules, and whether they were reverted.")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs (default 50)")
    add_json_flag(listing)
    listing.set_defaults(handler=list_command)

    show = actions.add_parser("show", parents=[common], help="every value one repair run changed",
                              description="Every value the run changed (old -> new, rule), the version the repair "
                                          "left and the row's version now: 'revertible' when they match, "
                                          "'changed since' when the service wrote the row after the repair.",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    show.add_argument("run_id", metavar="RUN_ID", help="the run id (from `repairs list`, or a unique prefix)")
    show.add_argument("--limit", type=int, default=200, metavar="N",
                      help="show at most N values in the table (default 200; --json gives all)")
    add_json_flag(show)
    show.set_defaults(handler=show_command)

    revert = actions.add_parser(
        "revert", parents=[common], help="restore the values one repair run changed",
        description="Restore the old values of the rows the run repaired, for each row whose version is still the "
                    "one the repair left (nobody changed it since). Each restored row gets its version bumped again "
                    "(a row whose version the repair reset gets its old version back) and its audit entries are "
                    "marked reverted, so a second revert does nothing. Rows the service changed, holds locked or "
                    "deleted are reported and left alone. Short batched transactions with FOR UPDATE SKIP LOCKED.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    revert.add_argument("run_id", metavar="RUN_ID", help="the run id (from `repairs list`, or a unique prefix)")
    revert.add_argument("--dry-run", action="store_true", help="say which rows would be restored, change nothing")
    revert.add_argument("--batch-size", type=int, default=500, metavar="N", help="rows per transaction (default 500)")
    add_json_flag(revert)
    revert.set_defaults(handler=revert_command)


def _engine(args: argparse.Namespace):
    from scheduler.db import check_connection, create_target_engine

    settings = load(args).settings
    engine = create_target_engine(settings, job="repairs")
    check_connection(engine, settings.database_display())
    return settings, engine


def _classified(settings, error: Exception) -> Exception:
    from scheduler.errors import classify

    return classify(error, resource=settings.database_display())


def list_command(args: argparse.Namespace) -> int:
    from jobs.validate_data import list_repairs

    settings, engine = _engine(args)
    try:
        runs = list_repairs(engine, limit=max(args.limit, 1))
    except Exception as error:  # noqa: BLE001 - reported with its code
        raise _classified(settings, error) from None
    finally:
        engine.dispose()
    if args.json:
        print_json(runs)
        return EXIT_OK
    if not runs:
        print("no repairs recorded (validate_data --repair has not changed anything yet)")
        return EXIT_OK
    print_table(["repaired", "run id", "table", "rows", "values", "status", "rules"],
                [[run["repaired_at"][:19].replace("T", " "), run["run_id"], run["table"], run["rows"], run["values"],
                  run["status"], ", ".join(run["rules"])] for run in runs])
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    from jobs.validate_data import show_repair
    from scheduler.errors import JackpotError

    settings, engine = _engine(args)
    try:
        entry = show_repair(engine, args.run_id)
    except JackpotError:
        raise
    except Exception as error:  # noqa: BLE001
        raise _classified(settings, error) from None
    finally:
        engine.dispose()
    if args.json:
        print_json(entry)
        return EXIT_OK
    print(f"run {entry['run_id']} repaired {entry['rows']} rows ({entry['values']} values) in {entry['table']} "
          f"at {entry['repaired_at'][:19].replace('T', ' ')}; status: {entry['status']}")
    print(f"rules: {', '.join(entry['rules'])}")
    values = entry["values_detail"]
    print_table(["row", "column", "old", "new", "rule", "version after repair", "version now", "state"],
                [[value["row_id"], value["column"], _text(value["old_value"]), _text(value["new_value"]), value["rule"],
                  value["version_after"], value["version_now"], value["state"]] for value in values[:max(args.limit, 1)]])
    if len(values) > args.limit:
        print(f"... {len(values) - args.limit} more values (use --limit or --json)")
    if entry["status"] != "reverted":
        print(f"undo: jackpot-maint repairs revert {entry['run_id']}")
    return EXIT_OK


def _text(value: object) -> str:
    return "NULL" if value is None else (value if isinstance(value, str) else json.dumps(value))


def revert_command(args: argparse.Namespace) -> int:
    from jobs.validate_data import revert_repair
    from scheduler.errors import JackpotError

    settings, engine = _engine(args)
    try:
        outcomes = revert_repair(engine, args.run_id, dry_run=args.dry_run, batch_size=max(args.batch_size, 1))
    except JackpotError:
        raise
    except Exception as error:  # noqa: BLE001
        raise _classified(settings, error) from None
    finally:
        engine.dispose()
    not_reverted = sum(outcome.not_reverted for outcome in outcomes)
    exit_code = EXIT_PROBLEMS if not_reverted else EXIT_OK
    if args.json:
        print_json({"exit_code": exit_code, "tables": [outcome.to_dict() for outcome in outcomes]})
        return exit_code
    for outcome in outcomes:
        verb = "would restore" if outcome.dry_run else "restored"
        print(f"run {outcome.run_id} on {outcome.table}: {verb} {len(outcome.reverted)} of {outcome.rows} rows"
              + (f" ({outcome.already_reverted} reverted before)" if outcome.already_reverted else "")
              + ("" if outcome.dry_run else f"; revert id {outcome.revert_id}"))
        for changed in outcome.changed:
            print(f"  row {changed['row_id']}: not reverted, changed since the repair "
                  f"(version {changed['version_after_repair']} after the repair, {changed['version_now']} now)")
        for row_id in outcome.locked:
            print(f"  row {row_id}: not reverted, locked by another session (run the revert again later)")
        for row_id in outcome.deleted:
            print(f"  row {row_id}: not reverted, the row no longer exists")
    if not_reverted:
        print(f"{not_reverted} rows could not be reverted; their audit entries stay pending")
    return exit_code
