"""One logging pipeline: loguru, with the stdlib loggers (apscheduler, sqlalchemy, apprise) routed in.

Everything written passes through redact() at the sink, so no password or notifier token reaches a
log line, whatever produced it (a message, an exception text, a library's debug output).
diagnose=False everywhere: loguru's default prints variable values in tracebacks, DSNs included.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from loguru import logger

from scheduler.redact import redact

HUMAN_FORMAT = "<green>{time:YYYY-MM-DD HH:mm:ss}</green> <level>{level: <7}</level> {extra[prefix]}{message}"
JOURNAL_FORMAT = "{level: <7} {extra[prefix]}{message}"
# Loggers of libraries that are chatty at DEBUG; apprise prints some tokens in full there.
QUIET_LIBRARIES = {"apprise": logging.INFO, "sqlalchemy.engine": logging.WARNING, "sqlalchemy.pool": logging.WARNING,
                   "apscheduler": logging.INFO, "urllib3": logging.INFO}


class InterceptHandler(logging.Handler):
    """Send stdlib logging records into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = logging.currentframe(), 2
        while frame and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).bind(library=record.name).log(level, record.getMessage())


def _patch(record: dict[str, Any]) -> None:
    job = record["extra"].get("job")
    record["extra"]["prefix"] = f"[{job}] " if job else ""
    record["extra"]["exc_text"] = ""
    if record["exception"] is not None:
        import traceback

        exc = record["exception"]
        record["extra"]["exc_text"] = "\n" + redact("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)).rstrip())


def _file_format(record: dict[str, Any]) -> str:
    # a callable format: loguru appends no raw exception; the redacted one is in extra[exc_text]
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[prefix]}{message}{extra[exc_text]}\n"


def _redact_message(record: dict[str, Any]) -> bool:
    record["message"] = redact(record["message"])
    return True


class _RedactingStream:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, message: str) -> None:
        self.stream.write(redact(str(message)))
        self.stream.flush()


def _json_sink(stream: TextIO):
    def sink(message: Any) -> None:
        record = message.record
        payload = {
            "time": record["time"].isoformat(), "level": record["level"].name, "message": record["message"],
            "logger": record["extra"].get("library") or record["name"],
        }
        for key in ("job", "run_id", "alert_id"):
            if key in record["extra"]:
                payload[key] = record["extra"][key]
        if record["exception"] is not None:
            import traceback

            exc = record["exception"]
            payload["exception"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
        stream.write(redact(json.dumps(payload, default=str)) + "\n")
        stream.flush()
    return sink


def setup_logging(level: str = "INFO", fmt: str = "auto", *, stream: TextIO | None = None, file: str | None = None,
                  file_rotation: str = "50 MB", file_retention: int = 7) -> None:
    """Configure the single pipeline. fmt: auto (colour on a terminal), human, or json (JSON lines)."""
    stream = stream or sys.stderr
    level = level.upper()
    logger.remove()
    logger.configure(patcher=_patch, extra={"prefix": ""})
    if fmt == "json":
        logger.add(_json_sink(stream), level=level, diagnose=False, backtrace=False)
    else:
        terminal = fmt in ("auto", "human") and hasattr(stream, "isatty") and stream.isatty()
        # journald adds its own timestamps; on a terminal a person wants them
        logger.add(_RedactingStream(stream), level=level, colorize=terminal, diagnose=False, backtrace=False,
                   format=HUMAN_FORMAT if terminal else JOURNAL_FORMAT)
    if file:
        # loguru writes and rotates this file itself: the filter redacts the message, the format
        # callable adds the redacted traceback instead of loguru's raw one
        logger.add(file, level=level, rotation=file_rotation, retention=file_retention, diagnose=False,
                   backtrace=False, format=_file_format, filter=_redact_message, encoding="utf-8")
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    for name, minimum in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(minimum, logging.getLevelName(level) if level in logging._nameToLevel else 0))
