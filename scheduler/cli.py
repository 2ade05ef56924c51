"""The `jackpot-maint` command line.

Each module in scheduler/commands/ adds its own subcommands through register(subparsers, common).
Every command returns an exit code (scheduler.errors.EXIT_*); expected failures print one clear line
naming the key, value or resource and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from scheduler import __version__
from scheduler.errors import EXIT_PROBLEMS, EXIT_USAGE, JackpotError, ConfigError
from scheduler.redact import redact

EPILOG = """exit codes:
  0  success
  1  the job ran and found problems, or failed
  2  bad usage or invalid configuration
  3  a dependency (target database, state store) is unreachable
  4  skipped: the same job is already running (here or on another host)

configuration: --config PATH, else $JACKPOT_CONFIG, else /etc/jackpot-maint/config.toml;
environment variables JACKPOT_* override the file, flags override both.
"""


def common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                       help="configuration file (TOML); default $JACKPOT_CONFIG or /etc/jackpot-maint/config.toml")
    group.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS,
                       help="target database URL, overrides database.url")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=argparse.SUPPRESS, dest="set_values",
                       help="override any setting, e.g. --set jobs.trim_history.max_entries=500 (repeatable)")
    group.add_argument("--log-level", metavar="LEVEL", default=argparse.SUPPRESS,
                       help="DEBUG, INFO, WARNING, ERROR (overrides logging.level)")
    group.add_argument("--log-format", choices=["auto", "human", "json"], default=argparse.SUPPRESS,
                       help="log format on stderr; json writes JSON lines")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="jackpot-maint", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep the jackpot service healthy: scheduled VACUUM/ANALYZE, history trimming with an "
                    "archive, data validation and reversible repair, log rotation, threshold monitoring, "
                    "and alerts with escalation.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"jackpot-maint {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import scheduler.commands as commands_package

    for module_info in sorted(pkgutil.iter_modules(commands_package.__path__), key=lambda info: info.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"scheduler.commands.{module_info.name}")
        module.register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from scheduler.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    # logging before configuration is loaded: flags and the environment decide; commands refine it
    import os

    setup_logging(getattr(args, "log_level", None) or os.environ.get("JACKPOT_LOG_LEVEL") or "INFO",
                  getattr(args, "log_format", None) or os.environ.get("JACKPOT_LOG_FORMAT") or "auto")
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"error: {redact(str(error.message))}", file=sys.stderr)
        for problem in error.problems:
            if problem != error.message:
                print(f"  - {redact(problem)}", file=sys.stderr)
        return error.exit_code
    except JackpotError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_PROBLEMS
    except Exception as error:  # noqa: BLE001 - an unexpected failure: report it, redacted
        text = redact("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        print(f"internal error (please report it): {redact(str(error))}\n{text}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
