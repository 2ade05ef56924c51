"""The [service] section: where the jackpot service lives (endpoints, process, logs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    base_url: str = Field("http://localhost:3001", description="The service's base URL for /health and /metrics")
