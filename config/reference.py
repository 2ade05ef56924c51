"""The configuration reference, generated from the settings model: the example file
(config/example.toml) and the README's table. Tests keep both in sync with the model."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from config.types import format_duration, parse_duration


@dataclass
class SettingRow:
    key: str
    default: Any
    description: str
    is_duration: bool
    is_secret: bool

    @property
    def env(self) -> str:
        from config.loader import ENV_ALIASES, env_name_for

        aliases = [name for name, key in ENV_ALIASES.items() if key == self.key]
        return aliases[0] if aliases else env_name_for(self.key)

    def shown_default(self) -> str:
        if self.default is None or self.default == [] and self.is_secret:
            return "(unset)"
        return toml_value(self.default, self.is_duration)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _dict_value_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is dict:
        return _model_of(typing.get_args(annotation)[1])
    return None


def _is_duration(field: FieldInfo) -> bool:
    for item in field.metadata:
        if getattr(item, "func", None) is parse_duration:
            return True
    annotation = field.annotation
    for arg in typing.get_args(annotation):
        for item in getattr(arg, "__metadata__", ()):
            if getattr(item, "func", None) is parse_duration:
                return True
    return False


def _is_secret(field: FieldInfo) -> bool:
    text = repr(field.annotation)
    return "SecretStr" in text


def setting_rows(model: type[BaseModel] | None = None, prefix: str = "", instance: Any = None) -> list[SettingRow]:
    """Every leaf key of the settings model: a table's own keys first, then its sub-tables.
    A table of named entries (e.g. notifiers.<name>) shows its default entries, or a <name> template."""
    if model is None:
        from config.settings import Settings

        model = Settings
    leaves: list[SettingRow] = []
    tables: list[SettingRow] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if instance is not None:
            default = getattr(instance, name)
        else:
            default = field.get_default(call_default_factory=True)
        nested = _model_of(field.annotation)
        mapped = _dict_value_model(field.annotation)
        if nested is not None:
            tables.extend(setting_rows(nested, key + ".", default if isinstance(default, BaseModel) else None))
        elif mapped is not None:
            if isinstance(default, dict) and default:
                for entry, value in default.items():
                    tables.extend(setting_rows(mapped, f"{key}.{entry}.", value))
            else:
                tables.extend(setting_rows(mapped, key + ".<name>."))
        else:
            if isinstance(default, SecretStr):
                default = None
            leaves.append(SettingRow(key, default, (field.description or "").strip(), _is_duration(field), _is_secret(field)))
    return leaves + tables


def toml_value(value: Any, is_duration: bool = False) -> str:
    if is_duration and isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(format_duration(float(value)))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    import re

    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def example_toml() -> str:
    """The example configuration: every key, its default, and one line of meaning."""
    lines = [
        "# jackpot-maint configuration: every key with its default and what it means.",
        "# Generated from the settings model by `jackpot-maint config example`; keys left commented",
        "# have no default (or are secrets). Environment variables override this file: see README.",
        "",
    ]
    current_table = None
    for row in setting_rows():
        table, _, leaf = row.key.rpartition(".")
        if table != current_table:
            if "<name>" in table:
                lines.append(f"# [{table.replace('<name>', 'NAME')}]   (one table per name)")
            else:
                lines.append(f"[{table}]")
            current_table = table
        for text in _wrap(row.description):
            lines.append(f"# {text}")
        value = row.shown_default()
        commented = row.default is None or "<name>" in table or (row.is_secret and not row.default)
        if value == "(unset)":
            lines.append(f"# {leaf} =")
        else:
            lines.append(f"{'# ' if commented else ''}{leaf} = {value}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _wrap(text: str, width: int = 98) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def markdown_reference() -> str:
    """The README's configuration reference table."""
    lines = ["| key | default | environment variable | meaning |", "| --- | --- | --- | --- |"]
    for row in setting_rows():
        default = row.shown_default().replace("|", "\\|")
        description = row.description.replace("|", "\\|")
        lines.append(f"| `{row.key}` | `{default}` | `{row.env}` | {description} |")
    return "\n".join(lines) + "\n"
