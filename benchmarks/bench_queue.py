"""Queue benchmark: what Celery + Redis costs per job, and what extra workers buy.

Measures, on the CPU at a tiny size so the queue's own cost is visible:

* **overhead per job** (jobs one at a time, the queue empty), median over ``--jobs``:
  ``submit -> start`` (submit called to ``JobStarted`` received) and
  ``finish -> delivery`` (``JobDone`` received minus ``JobStarted`` received minus
  the job's own run time), for ``LocalExecutor`` and ``CeleryExecutor``;
* **throughput** of the whole path (jobs per minute, ``--burst`` jobs submitted at
  once) with the local executor, 1 and 2 Celery workers.

Starts its own ``redis-server`` on a free port (or uses ``--redis-url``) and real
``nst-worker`` processes with one torch thread each.

    python benchmarks/bench_queue.py --json benchmarks/last_queue.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nst_core.executor import Executor, Job, JobDone, JobEvent, JobFailed, JobStarted, StyleRef  # noqa: E402
from nst_core.settings import StyleSettings  # noqa: E402


@dataclass
class Overhead:
    submit_to_start_ms: float
    finish_to_delivery_ms: float
    total_ms: float
    run_s: float
    samples: int


@dataclass
class Throughput:
    workers: int
    jobs: int
    seconds: float
    jobs_per_min: float


@dataclass
class Report:
    size: int
    steps: list[int]
    machine: str
    local_overhead: Overhead | None = None
    celery_overhead: Overhead | None = None
    throughput: list[Throughput] = field(default_factory=list)


class Timer:
    """Event sink that timestamps JobStarted and JobDone per job."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.done: dict[str, tuple[float, JobDone]] = {}
        self.failed: dict[str, str] = {}
        self.changed = asyncio.Event()

    async def __call__(self, event: JobEvent) -> None:
        now = time.perf_counter()
        if isinstance(event, JobStarted):
            self.started.setdefault(event.job_id, now)
        elif isinstance(event, JobDone):
            self.done.setdefault(event.job_id, (now, event))
        elif isinstance(event, JobFailed):
            self.failed[event.job_id] = event.reason
        self.changed.set()

    async def wait(self, ids: set[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= (set(self.done) | set(self.failed)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids - set(self.done))} job(s) never finished")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)
        if self.failed:
            raise RuntimeError(f"jobs failed: {self.failed}")


def make_job(job_id: str, photo: bytes, size: int) -> Job:
    return Job(job_id, photo, (StyleRef(preset="starry-night"),), StyleSettings(size=size))


async def measure_overhead(executor: Executor, timer: Timer, photo: bytes, size: int, n: int, tag: str) -> Overhead:
    starts, finishes, totals, runs = [], [], [], []
    for i in range(n + 1):  # the first is a warm-up
        job_id = f"{tag}-lat-{i}"
        t0 = time.perf_counter()
        await executor.submit(make_job(job_id, photo, size))
        await timer.wait({job_id})
        t_done, done = timer.done[job_id]
        if i == 0:
            continue
        t_start = timer.started[job_id]
        starts.append(t_start - t0)
        finishes.append(t_done - t_start - done.seconds)
        totals.append(t_done - t0 - done.seconds)
        runs.append(done.seconds)
    med = statistics.median
    return Overhead(med(starts) * 1000, med(finishes) * 1000, med(totals) * 1000, med(runs), n)


async def measure_throughput(
    executor: Executor, timer: Timer, photo: bytes, size: int, n: int, tag: str, workers: int
) -> Throughput:
    ids = [f"{tag}-burst-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for job_id in ids:
        await executor.submit(make_job(job_id, photo, size))
    await timer.wait(set(ids))
    seconds = max(timer.done[j][0] for j in ids) - t0
    return Throughput(workers, n, seconds, n / seconds * 60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_redis(directory: Path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--dir", str(directory),
         "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_worker(url: str, name: str, log_dir: Path, steps: str, threads: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        REDIS_URL=url, NST_STEPS=steps, NST_TORCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
        PYTHONPATH=str(ROOT), NST_LOGLEVEL="WARNING",
    )  # fmt: skip
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [sys.executable, "-m", "nst_core.celery_worker", "--device", "cpu", "--name", name],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_workers(url: str, names: list[str], timeout: float = 120) -> None:
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while not all(client.exists(f"nst:worker:{n}") for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not start")
        time.sleep(0.1)
    time.sleep(1.0)  # the Celery consumer connects just after the first heartbeat


async def bench(args: argparse.Namespace) -> Report:
    import torch

    from nst_core.celery_executor import CeleryExecutor
    from nst_core.executor import LocalExecutor

    torch.set_num_threads(args.threads)
    steps = tuple(int(s) for s in args.steps.split(","))
    photo = args.photo.read_bytes()
    report = Report(args.size, list(steps), f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")

    timer = Timer()
    local = LocalExecutor("cpu", steps=steps)
    await local.start(timer)
    report.local_overhead = await measure_overhead(local, timer, photo, args.size, args.jobs, "local")
    report.throughput.append(await measure_throughput(local, timer, photo, args.size, args.burst, "local", 0))
    await local.stop()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(private_redis(Path(tmp)))
        procs = [start_worker(url, "bench-1", Path(tmp), args.steps, args.threads)]
        try:
            wait_workers(url, ["bench-1"])
            timer = Timer()
            ex = CeleryExecutor(url)
            await ex.start(timer)
            report.celery_overhead = await measure_overhead(ex, timer, photo, args.size, args.jobs, "celery")
            report.throughput.append(await measure_throughput(ex, timer, photo, args.size, args.burst, "c1", 1))
            procs.append(start_worker(url, "bench-2", Path(tmp), args.steps, args.threads))
            wait_workers(url, ["bench-1", "bench-2"])
            report.throughput.append(await measure_throughput(ex, timer, photo, args.size, args.burst, "c2", 2))
            await ex.stop()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=20)
    return report


def print_report(r: Report) -> None:
    print(f"queue benchmark: {r.size} px, steps {r.steps}, {r.machine}")
    print(f"{'executor':<10} {'submit->start':>14} {'finish->delivery':>17} {'total':>9} {'job run':>9}")
    for name, o in (("local", r.local_overhead), ("celery", r.celery_overhead)):
        if o is not None:
            print(
                f"{name:<10} {o.submit_to_start_ms:>11.1f} ms {o.finish_to_delivery_ms:>14.1f} ms "
                f"{o.total_ms:>6.1f} ms {o.run_s:>7.2f} s   (median of {o.samples})"
            )
    print(f"{'throughput':<10} {'workers':>8} {'jobs':>6} {'seconds':>9} {'jobs/min':>9}")
    for t in r.throughput:
        label = "local" if t.workers == 0 else "celery"
        print(f"{label:<10} {t.workers or 1:>8} {t.jobs:>6} {t.seconds:>9.1f} {t.jobs_per_min:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", default="3", help="step schedule override (default 3)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs for the overhead medians")
    parser.add_argument("--burst", type=int, default=30, help="jobs for each throughput run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (and for local)")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--photo", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    shared = Path(os.environ.get("NST_SHARED_DIR", ROOT.parent / "shared"))
    args.photo = args.photo or shared / "content" / "astronaut.png"
    if not os.environ.get("NST_PRESET_DIR") and (shared / "presets").is_dir():
        os.environ["NST_PRESET_DIR"] = tempfile.mkdtemp(prefix="nst-presets-")
        os.environ["NST_PRESET_SOURCE_DIR"] = str(shared / "presets")
    if args.redis_url is None and shutil.which("redis-server") is None:
        parser.error("redis-server is not installed; pass --redis-url")
    report = asyncio.run(bench(args))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
