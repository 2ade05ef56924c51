"""Load the configuration: defaults < TOML file < environment < command-line flags.

Every value remembers where it came from, so that an error names the file or the environment
variable, and `config show --sources` shows when a default is being used unexpectedly. All problems
are collected and reported together: one `config validate` run shows everything that is wrong.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, SecretStr, ValidationError

from scheduler.errors import ConfigError
from scheduler.redact import MASK, mask_url, register_secret, register_url_secrets

DEFAULT_CONFIG_PATH = "/etc/jackpot-maint/config.toml"
ENV_PREFIX = "JACKPOT_"

# The guide's own variable names, and other short forms, mapped to their keys.
ENV_ALIASES: dict[str, str] = {
    "JACKPOT_DATABASE_URL": "database.url",
    "JACKPOT_DB_HOST": "database.host",
    "JACKPOT_DB_PORT": "database.port",
    "JACKPOT_DB_NAME": "database.name",
    "JACKPOT_DB_USER": "database.user",
    "JACKPOT_DB_PASSWORD": "database.password",
    "JACKPOT_DB_TABLE": "database.table",
    "JACKPOT_LOG_LEVEL": "logging.level",
    "JACKPOT_LOG_FORMAT": "logging.format",
    "JACKPOT_STATE_URL": "state.url",
}
# JACKPOT_ variables that are not settings of ours: where the config lives, the test suite's server,
# and the jackpot service's own variables (the guide's JACKPOT_CACHE_TTL, JACKPOT_MAX_CONNECTIONS...).
ENV_NOT_SETTINGS = {"JACKPOT_CONFIG", "JACKPOT_TEST_DATABASE_URL"}

SECRET_KEY_NAMES = {"password", "url", "urls", "token", "secret", "webhook"}


@dataclass
class LoadedSettings:
    """The validated settings, where each value came from, and non-fatal warnings."""

    settings: Any
    sources: dict[str, str] = field(default_factory=dict)
    config_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    def source_of(self, dotted_key: str) -> str:
        return source_of(self.sources, dotted_key)


def source_of(sources: Mapping[str, str], dotted_key: str) -> str:
    """Given sources by dotted key, return the source of a key or of its nearest parent; else 'default'."""
    key = dotted_key
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    # a parent set as a whole (e.g. a list) or a child set below it
    for candidate, source in sources.items():
        if candidate.startswith(dotted_key + "."):
            return source
    return "default"


def resolve_config_path(explicit: str | None, environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """Return (path, required): --config, else $JACKPOT_CONFIG, else the default file when it exists."""
    if explicit:
        return explicit, True
    if environ.get("JACKPOT_CONFIG"):
        return environ["JACKPOT_CONFIG"], True
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return DEFAULT_CONFIG_PATH, True
    return None, False


def load_settings(config_path: str | None = None, overrides: Mapping[str, tuple[Any, str]] | None = None,
                  environ: Mapping[str, str] | None = None) -> LoadedSettings:
    """Given an optional config path, flag overrides ({dotted key: (value, flag name)}) and the
    environment, return LoadedSettings. Raise ConfigError listing every problem otherwise."""
    from config.settings import Settings

    environ = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    flat: dict[str, tuple[Any, str]] = {}

    path, required = resolve_config_path(config_path, environ)
    if path:
        file_values, file_problem = _read_toml(path, required)
        if file_problem:
            problems.append(file_problem)
        for key, value in _flatten(file_values):
            flat[key] = (value, f"file {path}")

    env_values, env_problems, env_warnings = _read_environment(environ)
    problems.extend(env_problems)
    warnings.extend(env_warnings)
    flat.update(env_values)

    for key, (value, flag) in (overrides or {}).items():
        flat[key] = (value, f"flag {flag}")

    _register_secrets(flat)
    sources = {key: source for key, (_, source) in flat.items()}
    data = _unflatten({key: value for key, (value, _) in flat.items()}, problems, sources)

    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        problems.extend(_describe_validation_error(error, sources, Settings))
    if problems:
        where = f" ({path})" if path else ""
        raise ConfigError(f"invalid configuration{where}: {len(problems)} problem(s)", problems=problems,
                          hint="run `jackpot-maint config validate` to list them", details={"warnings": warnings})
    _register_settings_secrets(settings)
    return LoadedSettings(settings=settings, sources=sources, config_path=path, warnings=warnings)


def env_name_for(dotted_key: str) -> str:
    """Given 'jobs.trim_history.max_entries', return 'JACKPOT_JOBS__TRIM_HISTORY__MAX_ENTRIES'."""
    return ENV_PREFIX + "__".join(part.upper() for part in dotted_key.split("."))


# ---- sources -------------------------------------------------------------------------------


def _read_toml(path: str, required: bool) -> tuple[dict[str, Any], str | None]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle), None
    except FileNotFoundError:
        if required:
            return {}, f"At '{path}': the configuration file does not exist (give an existing file with --config or JACKPOT_CONFIG)"
        return {}, None
    except PermissionError:
        return {}, f"At '{path}': permission denied reading the configuration file (it must be readable by the daemon's user)"
    except IsADirectoryError:
        return {}, f"At '{path}': is a directory, expected a TOML file"
    except tomllib.TOMLDecodeError as error:
        return {}, f"At '{path}': not valid TOML: {error}"


def _read_environment(environ: Mapping[str, str]) -> tuple[dict[str, tuple[Any, str]], list[str], list[str]]:
    values: dict[str, tuple[Any, str]] = {}
    problems: list[str] = []
    warnings: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        raw = environ[name]
        if name in ENV_ALIASES:
            key = ENV_ALIASES[name]
        elif "__" in name:
            key = ".".join(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        else:
            warnings.append(f"environment variable {name} is not a jackpot-maint setting and is ignored "
                            f"(nested keys use __, e.g. JACKPOT_DATABASE__TABLE)")
            continue
        if raw.strip() == "":
            problems.append(f"At '{key}' (from environment variable {name}): empty value; unset the variable or give a value")
            continue
        values[key] = (_parse_env_value(raw), f"env {name}")
    return values, problems, warnings


def _parse_env_value(raw: str) -> Any:
    # Lists and tables can be given as JSON: JACKPOT_NOTIFIERS__ONCALL__URLS='["json://..."]'
    stripped = raw.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, dotted + "."))
        else:
            items.append((dotted, value))
    return items


def _unflatten(flat: Mapping[str, Any], problems: list[str], sources: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"At '{dotted}' (from {sources.get(dotted, 'default')}): "
                                f"'{part}' is a value, not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    return data


# ---- errors --------------------------------------------------------------------------------


def _describe_validation_error(error: ValidationError, sources: Mapping[str, str], model: type[BaseModel]) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"] if not str(part).startswith("function-")]
        dotted = ".".join(loc)
        source = source_of(sources, dotted)
        origin = "" if source == "default" else f" (from {_describe_source(source)})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            suggestion = difflib.get_close_matches(loc[-1], known, n=1)
            message = "unknown key"
            if suggestion:
                message += f"; did you mean '{suggestion[0]}'?"
            elif known:
                message += f"; known keys here: {', '.join(sorted(known))}"
        elif item["type"] not in ("value_error", "missing"):
            message += f", got {_shown_input(loc, item.get('input'))}"
        problems.append(f"At '{dotted}'{origin}: {message}")
    return problems


def _describe_source(source: str) -> str:
    kind, _, where = source.partition(" ")
    return {"env": f"environment variable {where}", "file": f"file {where}", "flag": f"flag {where}"}.get(kind, source)


def _shown_input(loc: list[str], value: Any) -> str:
    if any(part in SECRET_KEY_NAMES for part in loc) or isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return repr(mask_url(value))
    return repr(value)


def _known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            args = getattr(current, "__args__", ())
            # dict[str, Model]: any key, then the model
            current = args[-1] if args else None
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _register_secrets(flat: Mapping[str, tuple[Any, str]]) -> None:
    """Register every secret-looking raw value before validation, so even a rejected value is masked."""
    for key, (value, _) in flat.items():
        last = key.rpartition(".")[2]
        if last not in SECRET_KEY_NAMES and "password" not in last:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                if "://" in item:
                    # notifier URLs carry tokens in their paths; a DSN only its password
                    register_url_secrets(item, tokens=key.startswith("notifiers."))
                else:
                    register_secret(item)


def _register_settings_secrets(settings: Any) -> None:
    try:
        password = settings.database_password()
    except ConfigError:
        password = None
    register_secret(password)
    if settings.state.url is not None:
        register_url_secrets(settings.state.url.get_secret_value(), tokens=False)
    for notifier in settings.notifiers.values():
        for url in getattr(notifier, "urls", []):
            register_url_secrets(url.get_secret_value() if isinstance(url, SecretStr) else str(url))
