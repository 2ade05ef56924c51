"""The [scheduler] section: how the daemon schedules and reports on itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SchedulerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    timezone: str | None = Field(None, description="Time zone of cron schedules; default the host's")
