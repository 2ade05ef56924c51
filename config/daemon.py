"""The [scheduler] section: how the daemon schedules, stops, retries, and reports on itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from config.types import Duration


class SchedulerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    timezone: str | None = Field(None, description="Time zone of cron schedules, e.g. Europe/Berlin; default the host's")
    stop_grace: Duration = Field(30.0, description="On SIGTERM, let running jobs finish this long, then cancel their queries")
    stop_cancel_wait: Duration = Field(10.0, description="After cancelling on stop, wait this long for jobs to record their end")
    alerts_interval: Duration = Field(15.0, description="How often the daemon drives alert escalation, reminders and retries")
    heartbeat_interval: Duration = Field(30.0, description="How often the daemon records its heartbeat (read by `status`)")
    retry_initial: Duration = Field(5.0, description="First retry delay when the target database or state store is unreachable")
    retry_max: Duration = Field(300.0, description="Longest retry delay (the delay doubles up to this)")
    max_workers: int = Field(8, ge=1, le=64, description="Jobs that may run at the same time (different jobs; one job never overlaps itself)")
    claim_retention_days: int = Field(7, ge=1, description="Keep the multi-host fire claims (jackpot_maint.schedule_claims) this many days")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus metrics on this port, on metrics_address; off when unset")
    metrics_address: str = Field("127.0.0.1", description="Address the metrics endpoint listens on (keep it local: 127.0.0.1)")
    metrics_textfile: str | None = Field(None, description="Write Prometheus metrics to this file (node-exporter textfile collector); off when unset")
    deadman_url: SecretStr | None = Field(None, description="Dead-man's-switch URL (healthchecks-style) GET after each successful run "
                                          "of deadman_jobs; off when unset (a secret: never printed)")
    deadman_jobs: list[str] = Field(default_factory=lambda: ["monitor"], description="Jobs whose successful runs ping deadman_url")
    deadman_timeout: Duration = Field(10.0, description="Give up on one dead-man's-switch ping after this long")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'UTC' or 'Europe/Berlin'") from None
        return value

    @field_validator("deadman_jobs")
    @classmethod
    def _known_jobs(cls, value: list[str]) -> list[str]:
        from jobs.registry import JOB_MODULES

        unknown = [name for name in value if name not in JOB_MODULES]
        if unknown:
            raise ValueError(f"unknown job(s) {', '.join(unknown)}. Available jobs: {', '.join(JOB_MODULES)}")
        return value

    @field_validator("deadman_url", mode="before")
    @classmethod
    def _register_deadman_secret(cls, value: object) -> object:
        from scheduler.redact import register_url_secrets

        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            if not text.startswith(("http://", "https://")):
                raise ValueError("expected an http:// or https:// URL")
            register_url_secrets(text)
        return value
