"""The [service] section: where the jackpot service lives (endpoints, process, logs, disks).

The monitor job and `jackpot-maint diagnose` read it; the thresholds they apply live in
[jobs.monitor] (see jobs/monitor.py).
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.types import Duration


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    base_url: str = Field("http://localhost:3001", description="The service's base URL for /health and /metrics")
    health_path: str = Field("/health", description="Service health endpoint; expected {\"status\": \"healthy\", ...}")
    database_health_path: str = Field("/health/database", description="The service's own view of its database "
                                      "(empty to skip)")
    jackpot_health_path: str = Field("/health/jackpot", description="Jackpot pools health endpoint (empty to skip)")
    metrics_path: str = Field("/metrics", description="Metrics endpoint (JSON with error_rate in %; empty to skip)")
    request_timeout: Duration = Field(5.0, description="Give up on an endpoint that has not answered after this long")
    pid_file: str | None = Field(None, description="Find the service's process by this pid file (relative to directory)")
    systemd_unit: str | None = Field(None, description="Find the service's process as this unit's MainPID, "
                                     "e.g. jackpot-service")
    process_pattern: str | None = Field(None, description="Find the service's process by a regular expression "
                                        "over its command line, e.g. 'node .*server.js'")
    directory: str = Field("/opt/jackpot-service", description="The service's working directory; relative paths "
                           "(log_file, pid_file) are resolved against it")
    log_file: str = Field("logs/application.log", description="The service's application log (the guide's "
                          "logs/application.log); empty to skip the log check")
    disk_paths: list[str] = Field(default_factory=lambda: ["/"], description="Mount points whose usage is checked")
    database_application_name: str = Field("%jackpot%", description="SQL LIKE pattern of the service's "
                                           "application_name (the daemon's own sessions are excluded)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("health_path", "database_health_path", "jackpot_health_path", "metrics_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"expected a path starting with /, got {value!r}")
        return value

    def resolve(self, path: str) -> str:
        """Given a path from this section, return it absolute (relative ones are under `directory`)."""
        return path if os.path.isabs(path) else os.path.join(self.directory, path)

    def endpoints(self) -> dict[str, str]:
        """The configured endpoints as {check name: path}; an empty path is skipped."""
        named = {"health": self.health_path, "health_database": self.database_health_path,
                 "health_jackpot": self.jackpot_health_path, "metrics": self.metrics_path}
        return {name: path for name, path in named.items() if path}
