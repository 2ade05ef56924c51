"""Helpers every command uses: loading settings from flags, printing human or JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Iterable

from config.loader import LoadedSettings, load_settings


def flag_overrides(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """Given parsed arguments, return {dotted key: (value, flag)} for the settings loader."""
    from scheduler.errors import UsageError

    overrides: dict[str, tuple[Any, str]] = {}
    if getattr(args, "database_url", None):
        overrides["database.url"] = (args.database_url, "--database-url")
    if getattr(args, "log_level", None):
        overrides["logging.level"] = (args.log_level, "--log-level")
    if getattr(args, "log_format", None):
        overrides["logging.format"] = (args.log_format, "--log-format")
    for item in getattr(args, "set_values", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set jobs.trim_history.max_entries=500")
        parsed: Any = value
        if value[:1] in "[{":
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        overrides[key.strip()] = (parsed, f"--set {key.strip()}")
    return overrides


def load(args: argparse.Namespace, *, configure_logging: bool = True) -> LoadedSettings:
    """Load settings for a command (raises ConfigError, exit 2) and apply the logging settings."""
    loaded = load_settings(getattr(args, "config", None), flag_overrides(args))
    if configure_logging:
        from scheduler.logs import setup_logging

        logging_settings = loaded.settings.logging
        setup_logging(logging_settings.level, logging_settings.format, file=logging_settings.file,
                      file_rotation=logging_settings.file_rotation, file_retention=logging_settings.file_retention)
    from loguru import logger

    for warning in loaded.warnings:
        logger.debug(warning)
    return loaded


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def print_json(data: Any) -> None:
    from scheduler.redact import redact

    print(redact(json.dumps(data, indent=2, default=str)))


def print_table(headers: list[str], rows: Iterable[Iterable[Any]], *, stream=None) -> None:
    """Print rows as an aligned text table."""
    stream = stream or sys.stdout
    text_rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in text_rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    line = "  ".join(header.upper().ljust(widths[index]) for index, header in enumerate(headers))
    print(line.rstrip(), file=stream)
    for row in text_rows:
        print("  ".join(cell.ljust(widths[index]) for index, cell in enumerate(row)).rstrip(), file=stream)


def progress_printer(enabled: bool) -> Callable[[str], None] | None:
    """A progress callback for long manual runs: lines on stderr when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        print(f"  … {message}", file=sys.stderr, flush=True)
    return show
