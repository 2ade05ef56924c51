"""Benchmark rotate_logs: rotating and compressing a big log against `gzip -6` on an identical copy,
peak memory (RSS) for two sizes, and the lines copytruncate loses under a fast writer.

    .venv/bin/python bench/bench_rotate_logs.py            # 1 GiB (and 100 MiB for memory)
    .venv/bin/python bench/bench_rotate_logs.py --quick    # 128 MiB (and 100 MiB)

Each rotation runs the real job (create method, compress on) in a fresh process, which reports its
own wall time for run() and its peak RSS; gzip -6 compresses an identical copy in the same run,
and its output is fsynced too (the job fsyncs what it writes). The big size runs gzip, job, job,
gzip, so that a machine getting busier or quieter meanwhile weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIB = 1 << 20


def log_block(size: int, seed: int = 7) -> bytes:
    """`size` bytes of realistic service log lines (timestamps, levels, request ids, amounts)."""
    rng = random.Random(seed)
    levels = ["INFO"] * 8 + ["DEBUG"] * 4 + ["WARN", "ERROR"]
    routes = ["/api/jackpots", "/api/jackpots/contribute", "/api/jackpots/win", "/health", "/metrics"]
    messages = ["request completed", "contribution applied", "cache hit", "cache miss", "query executed",
                "jackpot updated", "connection acquired from pool", "slow query detected"]
    lines: list[str] = []
    total = 0
    moment = 1795000000.0
    while total < size:
        moment += rng.random() * 0.01
        clock = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        line = (f"{clock}.{int(moment * 1000) % 1000:03d}Z {rng.choice(levels)} [jackpot-service] "
                f"{rng.choice(messages)} req={rng.getrandbits(48):012x} {rng.choice(routes)} "
                f"group=g{rng.randint(1, 40)} amount={rng.randint(0, 10 ** 7) / 100:.2f} "
                f"response_time={rng.randint(1, 900)}ms status={rng.choice([200, 200, 200, 201, 400, 409, 500])}\n")
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def write_log(path: Path, size: int) -> None:
    """Write a log of `size` bytes: 32 MiB of distinct lines repeated (far beyond deflate's 32 KiB
    window, so it compresses like a real log), cut at a line end."""
    block = log_block(min(size, 32 * MIB))
    block = block[: block.rfind(b"\n") + 1]
    with open(path, "wb") as handle:
        written = 0
        while written + len(block) <= size:
            handle.write(block)
            written += len(block)
        rest = block[: size - written]
        handle.write(rest[: rest.rfind(b"\n") + 1])
        os.fsync(handle.fileno())


def run_job_child(folder: Path) -> dict:
    """In a fresh process: rotate folder/logs/application.log with the real job; return its figures."""
    completed = subprocess.run([sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True,
                               check=False)
    if completed.returncode != 0:
        raise SystemExit(f"job failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child(folder: Path) -> None:
    import config  # noqa: F401 - settings model first
    from config.loader import load_settings
    from jobs import rotate_logs
    from jobs.base import JobContext
    from scheduler.state import StateStore

    config_path = folder / "bench.toml"
    config_path.write_text(f'[state]\nurl = "sqlite:///{folder / "state.db"}"\n')
    settings = load_settings(str(config_path), environ={}).settings
    state = StateStore(f"sqlite:///{folder / 'state.db'}")
    state.upgrade()
    options = rotate_logs.Options(directory=str(folder), files=["logs/application.log"], max_size="1k", every=None,
                                  free_space_margin=0)
    context = JobContext(settings=settings, options=options, run_id="bench", job="rotate_logs", state=state)
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def current_rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    rss_before = current_rss()
    samples = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            samples.append(current_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = rotate_logs.run(context)
    seconds = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    done.set()
    sampler.join()
    rss_peak = max(samples)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state.dispose()
    assert result.summary["rotated"] == 1 and result.summary["compressed"] == 1, result.message
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "rss_before": rss_before, "rss_peak": rss_peak, "maxrss": maxrss,
                      "compressed_bytes": os.path.getsize(folder / "logs" / "application.log.1.gz")}))


def gzip_baseline(path: Path) -> tuple[float, float, int]:
    """gzip -6 an identical copy (output fsynced, like the job's); return (seconds, CPU seconds,
    output size)."""
    output = Path(str(path) + ".gz")
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(output, "wb") as handle:
        subprocess.run(["gzip", "-6", "-c", str(path)], stdout=handle, check=True)
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    return seconds, cpu_seconds, output.stat().st_size


def rotate_copy(master: Path, work: Path, name: str) -> dict:
    """Give the job an identical copy of `master` as its log, rotate it in a fresh process; return
    the job's figures."""
    folder = work / name
    (folder / "logs").mkdir(parents=True)
    shutil.copyfile(master, folder / "logs" / "application.log")
    os.sync()
    figures = run_job_child(folder)
    shutil.rmtree(folder)
    return figures


def gzip_master(master: Path, work: Path) -> tuple[float, float, int]:
    """gzip -6 the master log (the job gets identical copies); return (seconds, CPU seconds, size)."""
    copy = work / "gzip-copy.log"
    shutil.copyfile(master, copy)
    os.sync()
    try:
        return gzip_baseline(copy)
    finally:
        copy.unlink()
        Path(str(copy) + ".gz").unlink()


def copytruncate_loss(work: Path, rate: int, rotations: int) -> dict:
    """Rotate a log by copytruncate `rotations` times under a writer appending `rate` lines/s;
    count the lines missing afterwards."""
    sys.path.insert(0, str(ROOT / "tests" / "jobs"))
    from helpers_logwriter import count_lines, start_writer

    import config  # noqa: F401
    from config.loader import load_settings
    from jobs import rotate_logs
    from jobs.base import JobContext
    from scheduler.state import StateStore

    folder = work / "copytruncate"
    (folder / "logs").mkdir(parents=True)
    log = folder / "logs" / "application.log"
    config_path = folder / "bench.toml"
    config_path.write_text(f'[state]\nurl = "sqlite:///{folder / "state.db"}"\n')
    settings = load_settings(str(config_path), environ={}).settings
    state = StateStore(f"sqlite:///{folder / 'state.db'}")
    state.upgrade()
    options = rotate_logs.Options(directory=str(folder), files=["logs/application.log"], max_size="1k", every=None,
                                  free_space_margin=0, method="copytruncate", keep=rotations + 1, compress=False)
    writer = start_writer(log, rate=rate)
    seen_lost = 0
    try:
        for _ in range(rotations):
            time.sleep(0.1)
            result = rotate_logs.run(JobContext(settings=settings, options=options, run_id="bench",
                                                job="rotate_logs", state=state))
            seen_lost += result.summary.get("copytruncate_lost_bytes_at_least", 0)
    finally:
        written = writer.stop()
    state.dispose()
    counted = count_lines(log)
    missing = len(counted.missing(written["last"]))
    shutil.rmtree(folder)
    return {"rate": rate, "rotations": rotations, "written": written["last"], "lost": missing,
            "torn": counted.torn, "duplicated": len(counted.duplicated()), "seen_lost_bytes": seen_lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 MiB instead of 1 GiB")
    parser.add_argument("--size-mib", type=int, help="size of the big log in MiB (default 1024, 128 with --quick)")
    parser.add_argument("--dir", help="work folder (default a temporary folder; needs about 2.5x the size free)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child))
        return
    big = (args.size_mib or (128 if args.quick else 1024)) * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-rotate-", dir=args.dir))
    try:
        print(f"rotate_logs benchmark: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}, work folder {work}")
        small_master = work / "master-100m.log"
        write_log(small_master, 100 * MIB)
        small = rotate_copy(small_master, work, "rotate-small")
        small_master.unlink()
        master = work / "master.log"
        write_log(master, big)
        size = master.stat().st_size
        # ABBA order (gzip, job, job, gzip): a machine that gets busier or quieter during the run
        # weighs on both sides alike
        gzip_first, gzip_cpu_first, gzip_bytes = gzip_master(master, work)
        job_runs = [rotate_copy(master, work, f"rotate-{index}") for index in range(2)]
        gzip_last, gzip_cpu_last, _ = gzip_master(master, work)
        gzip_seconds = [gzip_first, gzip_last]
        job_seconds = [run["seconds"] for run in job_runs]
        ratio = sum(job_seconds) / sum(gzip_seconds)
        best_ratio = min(job_seconds) / min(gzip_seconds)
        cpu_ratio = sum(run["cpu_seconds"] for run in job_runs) / (gzip_cpu_first + gzip_cpu_last)
        large = job_runs[0]
        print(f"\nrotate + compress {size / MIB:.0f} MiB: job {' / '.join(f'{s:.2f}' for s in job_seconds)} s "
              f"({size / MIB / min(job_seconds):.0f} MiB/s), gzip -6 on an identical copy "
              f"{' / '.join(f'{s:.2f}' for s in gzip_seconds)} s")
        print(f"  ratio job/gzip = {ratio:.2f} over both runs, {best_ratio:.2f} best against best (target <= 1.10)")
        job_cpu = [run["cpu_seconds"] for run in job_runs]
        print(f"  CPU time: job {' / '.join(f'{s:.2f}' for s in job_cpu)} s, gzip "
              f"{gzip_cpu_first:.2f} / {gzip_cpu_last:.2f} s; ratio {cpu_ratio:.2f} (less sensitive to a busy machine)")
        print(f"  compressed size: job {large['compressed_bytes'] / MIB:.1f} MiB, gzip -6 "
              f"{gzip_bytes / MIB:.1f} MiB (ratio {large['compressed_bytes'] / gzip_bytes:.3f})")
        for label, figures in (("100 MiB", small), (f"{big // MIB} MiB", large)):
            print(f"peak RSS during run() rotating {label}: {figures['rss_peak'] / MIB:.1f} MiB "
                  f"(before run(): {figures['rss_before'] / MIB:.1f} MiB, growth "
                  f"{(figures['rss_peak'] - figures['rss_before']) / MIB:.1f} MiB; process ru_maxrss "
                  f"{figures['maxrss'] / MIB:.1f} MiB)")
        master.unlink()
        loss = copytruncate_loss(work, rate=200_000, rotations=20 if not args.quick else 5)
        print(f"\ncopytruncate under a writer at {loss['rate']} lines/s, {loss['rotations']} rotations: "
              f"{loss['lost']} of {loss['written']} lines lost ({loss['lost'] / loss['rotations']:.1f} per rotation), "
              f"{loss['torn']} torn, {loss['duplicated']} duplicated; the job itself saw at least "
              f"{loss['seen_lost_bytes']} bytes arrive in its window. create + reopen loses none (tests).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
