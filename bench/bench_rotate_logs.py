"""Benchmark rotate_logs: rotating and compressing a big log against `gzip -6` on an identical copy,
peak memory (RSS) for two sizes, and the lines copytruncate loses under a fast writer.

    .venv/bin/python bench/bench_rotate_logs.py            # 1 GiB (and 100 MiB for memory)
    .venv/bin/python bench/bench_rotate_logs.py --quick    # 128 MiB (and 100 MiB)

Each rotation runs the real job (create method, compress on) in a fresh process, which reports its
own wall time for run() and its peak RSS; gzip -6 compresses an identical copy in the same run,
and its output is fsynced too (the job fsyncs what it writes).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIB = 1 << 20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    started = time.perf_counter()
    result = rotate_logs.run(context)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    rss_peak = max(samples)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state.dispose()
    assert result.summary["rotated"] == 1 and result.summary["compressed"] == 1, result.message
    print(json.dumps({"seconds": seconds, "rss_before": rss_before, "rss_peak": rss_peak, "maxrss": maxrss,
                      "compressed_bytes": os.path.getsize(folder / "logs" / "application.log.1.gz")}))


def gzip_baseline(path: Path) -> tuple[float, int]:
    """gzip -6 an identical copy (output fsynced, like the job's); return (seconds, output size)."""
    output = Path(str(path) + ".gz")
    started = time.perf_counter()
    with open(output, "wb") as handle:
        subprocess.run(["gzip", "-6", "-c", str(path)], stdout=handle, check=True)
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started
    return seconds, output.stat().st_size


def measure(size: int, work: Path, *, baseline: bool) -> dict:
    folder = work / f"rotate-{size // MIB}m"
    logs = folder / "logs"
    logs.mkdir(parents=True)
    log = logs / "application.log"
    write_log(log, size)
    figures: dict = {"size": log.stat().st_size}
    if baseline:
        copy = work / f"gzip-copy-{size // MIB}m.log"
        shutil.copyfile(log, copy)
        os.sync()
        figures["gzip_seconds"], figures["gzip_bytes"] = gzip_baseline(copy)
        copy.unlink()
        Path(str(copy) + ".gz").unlink()
    os.sync()
    figures.update(run_job_child(folder))
    shutil.rmtree(folder)
    return figures


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
              f"work folder {work}")
        small = measure(100 * MIB, work, baseline=False)
        large = measure(big, work, baseline=True)
        ratio = large["seconds"] / large["gzip_seconds"]
        print(f"\nrotate + compress {large['size'] / MIB:.0f} MiB: job {large['seconds']:.2f} s "
              f"({large['size'] / MIB / large['seconds']:.0f} MiB/s), gzip -6 on an identical copy "
              f"{large['gzip_seconds']:.2f} s; ratio job/gzip = {ratio:.2f} (target <= 1.10)")
        print(f"  compressed size: job {large['compressed_bytes'] / MIB:.1f} MiB, gzip -6 "
              f"{large['gzip_bytes'] / MIB:.1f} MiB (ratio {large['compressed_bytes'] / large['gzip_bytes']:.3f})")
        for label, figures in (("100 MiB", small), (f"{big // MIB} MiB", large)):
            print(f"peak RSS during run() rotating {label}: {figures['rss_peak'] / MIB:.1f} MiB "
                  f"(before run(): {figures['rss_before'] / MIB:.1f} MiB, growth "
                  f"{(figures['rss_peak'] - figures['rss_before']) / MIB:.1f} MiB; process ru_maxrss "
                  f"{figures['maxrss'] / MIB:.1f} MiB)")
        loss = copytruncate_loss(work, rate=200_000, rotations=20 if not args.quick else 5)
        print(f"\ncopytruncate under a writer at {loss['rate']} lines/s, {loss['rotations']} rotations: "
              f"{loss['lost']} of {loss['written']} lines lost ({loss['lost'] / loss['rotations']:.1f} per rotation), "
              f"{loss['torn']} torn, {loss['duplicated']} duplicated; the job itself saw at least "
              f"{loss['seen_lost_bytes']} bytes arrive in its window. create + reopen loses none (tests).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
