"""`jackpot-maint demo`: the whole product working, end to end, on a throwaway set-up."""

from __future__ import annotations

import argparse

DESCRIPTION = """Start a throwaway PostgreSQL cluster and the simulated jackpot service, load a
jackpots table with realistic data and known faults, run the real daemon on a fast schedule with a
sped-up escalation policy (alerts go to a JSON-lines file, printed here), print a live account of what
ran, what it found and fixed, which alerts fired, escalated and resolved; fix the service halfway so
the alerts resolve; then stop the daemon, print a summary, and remove everything (also on Ctrl-C or
SIGTERM). Needs the PostgreSQL server binaries (tests/run.sh demo installs them)."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("demo", parents=[common], help="run the end-to-end demo on a throwaway set-up",
                                   description=DESCRIPTION)
    parser.add_argument("--seconds", type=float, default=60.0, metavar="N", help="how long the daemon runs (default 60, at least 20)")
    parser.add_argument("--rows", type=int, default=2000, metavar="N", help="healthy jackpots to generate (default 2000)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (config, state, logs, alerts.jsonl)")
    parser.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from scheduler.demo import Demo
    from scheduler.errors import JackpotError
    from scheduler.pgcluster import find_bindir

    try:
        find_bindir()
    except FileNotFoundError as error:
        raise JackpotError(str(error), code="J004", hint="or run tests/run.sh demo, which installs them") from None
    return Demo(args.seconds, keep=args.keep, rows=args.rows).run()
