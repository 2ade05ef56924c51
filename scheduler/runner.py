"""Run one job: lock, ledger, timeout, error codes, alerts. One job's failure never takes the process down."""

from __future__ import annotations

import importlib
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from loguru import logger

from jobs.base import Cancelled, JobContext, JobResult
from jobs.registry import get_job
from scheduler import ledger
from scheduler.errors import (EXIT_OK, EXIT_PROBLEMS, EXIT_UNREACHABLE, ConnectionFailed, JackpotError,
                              JobLocked, JobTimeout, classify)
from scheduler.locks import job_lock
from scheduler.redact import redact
from scheduler.state import StateStore


@dataclass
class RunOutcome:
    record: ledger.RunRecord
    result: JobResult | None
    error: JackpotError | None
    exit_code: int


def run_job(settings, name: str, *, trigger: str = "manual", dry_run: bool = False,
            scheduled_for: datetime | None = None, state: StateStore | None = None,
            cancel_event: threading.Event | None = None, progress: Callable[[str], None] | None = None,
            options_override: dict[str, Any] | None = None, run_id: str | None = None,
            lock: bool = True, claim: bool = False) -> RunOutcome:
    """Given settings and a job name, run the job once and record it. Return the outcome.

    claim: a scheduled fire of a database job: also claim (job, scheduled_for) across hosts; a fire
    another host claimed is recorded as skipped. Setting cancel_event stops the run: the job sees it
    at its next check_cancelled() and its queries are cancelled in PostgreSQL.
    Raise UsageError for an unknown job and StateStoreUnavailable when the ledger cannot be written;
    everything the job itself raises is caught, classified and recorded.
    """
    module = get_job(name)
    own_state = state is None
    if state is None:
        state = StateStore.open(settings)
    try:
        ledger.mark_abandoned(state)
        options = getattr(settings.jobs, name)
        if options_override:
            options = options.model_copy(update=options_override)
        try:
            claim_for = scheduled_for if claim and module.SCOPE == "database" else None
            with (job_lock(settings, name, module.SCOPE, state, claim_for=claim_for) if lock else _nothing()):
                return _run_locked(settings, module, name, options, state, trigger=trigger, dry_run=dry_run,
                                   scheduled_for=scheduled_for, cancel_event=cancel_event, progress=progress,
                                   run_id=run_id)
        except JobLocked as locked:
            record = ledger.start_run(state, name, trigger, scheduled_for=scheduled_for, dry_run=dry_run,
                                      status="skipped", message=locked.message, run_id=run_id)
            logger.bind(job=name, run_id=record.id).warning("{} skipped: {}", name, locked.message)
            _after_run(settings, state, record, None, locked)
            return RunOutcome(record, None, locked, locked.exit_code)
        except ConnectionFailed as failure:
            # the lock lives in the target database: it is unreachable before the job even starts
            record = ledger.start_run(state, name, trigger, scheduled_for=scheduled_for, dry_run=dry_run,
                                      status="running", run_id=run_id)
            ledger.finish_run(state, record, "failed", error_code=failure.codes, message=failure.message)
            logger.bind(job=name, run_id=record.id).error("{} failed: {}", name, failure)
            _after_run(settings, state, record, None, failure)
            return RunOutcome(record, None, failure, failure.exit_code)
        except JackpotError as failure:
            # taking the lock or the claim failed for another reason (e.g. a permission): recorded, not raised
            record = ledger.start_run(state, name, trigger, scheduled_for=scheduled_for, dry_run=dry_run,
                                      status="running", run_id=run_id)
            ledger.finish_run(state, record, "failed", error_code=failure.codes, message=redact(failure.message))
            logger.error("{}: {}", name, redact(str(failure)))
            _after_run(settings, state, record, None, failure)
            return RunOutcome(record, None, failure, failure.exit_code)
    finally:
        if own_state:
            state.dispose()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def _run_locked(settings, module, name, options, state, *, trigger, dry_run, scheduled_for, cancel_event,
                progress, run_id) -> RunOutcome:
    record = ledger.start_run(state, name, trigger, scheduled_for=scheduled_for, dry_run=dry_run, run_id=run_id)
    bound = logger.bind(job=name, run_id=record.id)
    context = JobContext(settings=settings, options=options, run_id=record.id, job=name, trigger=trigger,
                         dry_run=dry_run, host=record.host, logger=bound, state=state,
                         cancel_event=cancel_event or threading.Event(), progress=progress)
    timed_out = threading.Event()
    finished = threading.Event()

    def _cancel_queries() -> None:
        try:
            from scheduler.db import cancel_backends

            cancel_backends(settings, set(context.backend_pids))
        except Exception as error:  # noqa: BLE001
            bound.warning("could not cancel the job's queries: {}", redact(str(error)))

    def _watch() -> None:
        # One watcher per run: the timeout, or a stop asked from outside (the daemon's SIGTERM), sets
        # the cancel event for check_cancelled() and cancels the job's queries in PostgreSQL, since a
        # job blocked in a long statement never reaches its next check_cancelled().
        deadline = context.started_monotonic + options.timeout
        while not finished.wait(min(0.25, max(deadline - time.monotonic(), 0.0))):
            if context.cancel_event.is_set():
                bound.warning("{} asked to stop; cancelling its queries", name)
                _cancel_queries()
                return
            if time.monotonic() >= deadline:
                timed_out.set()
                context.cancel_event.set()
                bound.error("{} exceeded its timeout of {:g}s; cancelling its queries", name, options.timeout)
                _cancel_queries()
                return

    timer = threading.Thread(target=_watch, name=f"watch:{name}", daemon=True)
    timer.start()
    bound.info("{} started ({}{})", name, trigger, ", dry run" if dry_run else "")
    result: JobResult | None = None
    error: JackpotError | None = None
    stopped = False
    try:
        result = module.run(context)
        if timed_out.is_set():
            error = JobTimeout(f"{name} exceeded its timeout of {options.timeout:g}s and was cancelled")
    except Cancelled:
        if timed_out.is_set():
            error = JobTimeout(f"{name} exceeded its timeout of {options.timeout:g}s and was cancelled")
        else:
            stopped = True
            error = JackpotError(f"{name} was cancelled before it finished (the daemon is stopping)", code="J006")
    except Exception as exc:  # noqa: BLE001 - one job's failure never takes the process down
        if timed_out.is_set():
            error = JobTimeout(f"{name} exceeded its timeout of {options.timeout:g}s and was cancelled")
        elif context.cancel_event.is_set():
            # its query was cancelled because the daemon is stopping
            stopped = True
            error = JackpotError(f"{name} was cancelled before it finished (the daemon is stopping)", code="J006")
        else:
            error = classify(exc, resource=settings.database_display())
            if type(error) is JackpotError:  # unexpected: keep the traceback for the log
                bound.opt(exception=exc).error("{} failed unexpectedly", name)
    finally:
        finished.set()
        context.close()

    if error is not None:
        status = "cancelled" if stopped else "failed"
        summary = result.summary if result else {}
        ledger.finish_run(state, record, status, summary=summary, error_code=error.codes, message=redact(error.message))
        bound.error("{} {}: {}", name, status, redact(str(error)))
        exit_code = EXIT_UNREACHABLE if isinstance(error, ConnectionFailed) else error.exit_code
        if exit_code == EXIT_OK:
            exit_code = EXIT_PROBLEMS
    else:
        assert result is not None
        ledger.finish_run(state, record, result.status, summary=result.summary, error_code=result.error_code,
                          message=redact(result.message) if result.message else None)
        log = bound.success if result.status == "ok" else bound.warning
        log("{} finished: {}{}", name, result.status, f" - {result.message}" if result.message else "")
        exit_code = EXIT_OK if result.status in ("ok", "skipped") else EXIT_PROBLEMS
    _after_run(settings, state, record, result, error)
    return RunOutcome(record, result, error, exit_code)


def _after_run(settings, state, record, result, error) -> None:
    """Hand the run to alerting. An alerting failure is logged; the job's outcome is what matters."""
    try:
        alerts = importlib.import_module("scheduler.alerts")
    except ModuleNotFoundError as missing:
        if missing.name != "scheduler.alerts":
            logger.error("alerting unavailable: {}", missing)
        return
    try:
        alerts.on_run_finished(settings, state, record, result, error)
    except Exception as exc:  # noqa: BLE001
        logger.error("alerting failed after {} run {}: {}", record.job, record.id,
                     redact("".join(traceback.format_exception_only(type(exc), exc)).strip()))
