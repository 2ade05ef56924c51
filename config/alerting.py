"""The [alerts] section and [notifiers.<name>] targets: who is told what, and when."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class AlertsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="Raise and send alerts")


class NotifierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    type: str = Field("apprise", description="apprise, file, command, or a plugin's name")
    urls: list[SecretStr] = Field(default_factory=list, description="apprise URLs (secrets: never printed)")
