"""`jackpot-maint config validate|show`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import BaseModel, SecretStr

from scheduler.commands._common import add_json_flag, flag_overrides, print_json
from scheduler.errors import EXIT_OK, EXIT_USAGE, ConfigError
from scheduler.redact import MASK, mask_url, redact


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("config", parents=[common], help="validate or show the configuration",
                                   description="Validate or show the effective configuration (secrets masked).")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", parents=[common], help="report every configuration problem; exit 2 when invalid",
                                  description="Load the configuration from file, environment and flags and report ALL "
                                              "problems, each with its key and where the value came from. Exit 0 valid, 2 invalid.")
    add_json_flag(validate)
    validate.set_defaults(handler=validate_command)
    show = actions.add_parser("show", parents=[common], help="print the effective configuration, secrets masked",
                              description="Print the effective configuration with secrets masked.")
    show.add_argument("--sources", action="store_true",
                      help="say for each value whether it came from a default, the file or the environment")
    add_json_flag(show)
    show.set_defaults(handler=show_command)
    example = actions.add_parser("example", parents=[common], help="print an example configuration listing every key",
                                 description="Print a TOML file with every key, its default and one line of meaning.")
    example.set_defaults(handler=lambda args: _print_generated("example"))
    reference = actions.add_parser("reference", parents=[common], help="print the configuration reference (Markdown)")
    reference.set_defaults(handler=lambda args: _print_generated("reference"))


def _print_generated(kind: str) -> int:
    from config.reference import example_toml, markdown_reference

    sys.stdout.write(example_toml() if kind == "example" else markdown_reference())
    return EXIT_OK


def validate_command(args: argparse.Namespace) -> int:
    from config.loader import load_settings

    try:
        loaded = load_settings(getattr(args, "config", None), flag_overrides(args))
    except ConfigError as error:
        if args.json:
            print_json({"valid": False, "problems": [redact(p) for p in error.problems]})
        else:
            print(f"configuration is INVALID: {len(error.problems)} problem(s)", file=sys.stderr)
            for problem in error.problems:
                print(f"  - {redact(problem)}", file=sys.stderr)
            for warning in error.details.get("warnings", []):
                print(f"  note: {warning}", file=sys.stderr)
        return EXIT_USAGE
    problems = cross_checks(loaded.settings)
    if args.json:
        print_json({"valid": not problems, "config_file": loaded.config_path, "problems": problems,
                    "warnings": loaded.warnings})
    else:
        if problems:
            print(f"configuration is INVALID: {len(problems)} problem(s)", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
        else:
            print(f"configuration is valid ({loaded.config_path or 'no file: defaults and environment'})")
        for warning in loaded.warnings:
            print(f"  note: {warning}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def cross_checks(settings: Any) -> list[str]:
    """Checks that need the whole configuration (run after the schema)."""
    problems = []
    try:
        settings.database_password()
    except ConfigError as error:
        problems.append(error.message)
    return problems


def show_command(args: argparse.Namespace) -> int:
    from scheduler.commands._common import load

    loaded = load(args)
    values = masked_dump(loaded.settings)
    if args.json:
        payload: dict[str, Any] = {"config_file": loaded.config_path, "settings": values}
        if args.sources:
            payload["sources"] = {key: loaded.source_of(key) for key, _ in _flatten(values)}
        print_json(payload)
        return EXIT_OK
    print(f"# configuration file: {loaded.config_path or '(none)'}")
    for key, value in _flatten(values):
        line = f"{key} = {_toml_value(value)}"
        if args.sources:
            line = f"{line:<70}  # {loaded.source_of(key)}"
        print(redact(line))
    return EXIT_OK


def masked_dump(model: BaseModel) -> dict[str, Any]:
    """Given a settings model, return plain data with every secret masked (URLs keep host and path)."""
    def convert(value: Any) -> Any:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            return _privacy_url(secret) if "://" in secret else MASK
        if isinstance(value, BaseModel):
            return {name: convert(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(item) for item in value]
        return value
    return convert(model)


def _privacy_url(url: str) -> str:
    """A secret URL as it may be shown: a DSN with its password masked, a notifier URL in apprise's
    privacy form with path tokens masked too."""
    if url.startswith(("postgres", "sqlite")):
        return mask_url(url)
    try:
        import apprise

        from scheduler.notifiers.apprise import privacy_form

        instance = apprise.Apprise.instantiate(url)
        return privacy_form(instance.url(privacy=True) if instance is not None else url)
    except Exception:  # noqa: BLE001 - never show what could not be masked
        return url.split("://", 1)[0] + "://" + MASK


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, dotted + "."))
        else:
            items.append((dotted, value))
    return items


def _toml_value(value: Any) -> str:
    import json

    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, default=str)
