"""`jackpot-maint run`: the daemon, in the foreground (this is what systemd starts)."""

from __future__ import annotations

import argparse
import os
import sys

from scheduler.commands._common import flag_overrides, load

DESCRIPTION = """Run the scheduler in the foreground until SIGTERM or SIGINT.

Each enabled job runs on its jobs.<name>.schedule (5-field cron, weekday 0 = Sunday, in
scheduler.timezone; or 'every 10m'). Database jobs run once across all hosts for each fire; host jobs
on every host. Signals: SIGTERM/SIGINT stop (running jobs get scheduler.stop_grace, then their queries
are cancelled; exit 0); SIGHUP reloads the configuration (an invalid one is rejected whole and the
running one kept). Under systemd it reports READY/RELOADING/STOPPING/STATUS and pings the watchdog.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("run", parents=[common], help="run the scheduler daemon in the foreground",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from loguru import logger

    from scheduler.daemon import Daemon

    overrides = flag_overrides(args)
    loaded = load(args)
    daemon = Daemon(loaded, config_path=loaded.config_path, overrides=overrides)
    code = daemon.run()
    if daemon.unfinished_runs:
        # a job thread ignored its cancellation: do not wait for it at interpreter exit
        logger.complete()
        sys.stderr.flush()
        os._exit(code)
    return code
