"""The daemon's own metrics: Prometheus text over a real local HTTP port and in a textfile."""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta, timezone

from scheduler.ledger import RunRecord
from scheduler.metrics import Metrics, MetricsServer


def record(job: str, status: str, seconds: float) -> RunRecord:
    finished = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    return RunRecord(id="x", job=job, trigger="scheduled", host="h", status=status,
                     started_at=finished - timedelta(seconds=seconds), finished_at=finished)


def test_metrics_count_runs_failures_durations_and_last_success_per_job(tmp_path):
    metrics = Metrics("host-1")
    metrics.record_run(record("vacuum_analyze", "ok", 2.5))
    metrics.record_run(record("vacuum_analyze", "failed", 0.5))
    metrics.record_run(record("monitor", "skipped", 0))
    metrics.open_alerts = 2
    text = metrics.render()
    assert 'jackpot_maint_runs_total{job="vacuum_analyze",status="ok"} 1' in text
    assert 'jackpot_maint_failures_total{job="vacuum_analyze"} 1' in text
    assert 'jackpot_maint_run_duration_seconds_sum{job="vacuum_analyze"} 3.0' in text
    assert 'jackpot_maint_run_duration_seconds_count{job="vacuum_analyze"} 2' in text
    assert f'jackpot_maint_last_success_timestamp_seconds{{job="vacuum_analyze"}} {datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc).timestamp()!r}' in text
    assert 'jackpot_maint_runs_total{job="monitor",status="skipped"} 1' in text
    assert "jackpot_maint_open_alerts 2" in text
    assert 'job="monitor"' not in text.split("jackpot_maint_run_duration_seconds")[1].split("# HELP")[0]

    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert response.read().decode() == metrics.render()
    finally:
        server.stop()

    path = tmp_path / "jackpot_maint.prom"
    metrics.write_textfile(str(path))
    assert path.read_text() == metrics.render()
    assert [p.name for p in tmp_path.iterdir()] == ["jackpot_maint.prom"]  # no temporary left behind
