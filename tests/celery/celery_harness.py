"""Helpers for the Celery tests: a private redis-server, real ``nst-worker`` processes, an event collector.

Each test module gets its own ``redis-server`` (append-only file in a temp dir,
so a restart keeps the queue) on a free port, and starts its workers once:
importing torch and loading VGG19 takes seconds, the jobs (64 px, 3 steps)
a fraction of one.  Workers get one torch thread each so two of them share the
two cores of a small CI machine without thrashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from nst_core.executor import Job, JobEvent, StyleRef
from nst_core.settings import StyleSettings

ROOT = Path(__file__).resolve().parents[2]

if shutil.which("redis-server") is None:  # pragma: no cover - CI has it
    pytest.skip("redis-server is not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A private redis-server that can be stopped and started again on the same port and data."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
                "--appendfsync", "always", "--dir", str(self.directory), "--save", "", "--protected-mode", "no",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file is complete."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def worker_env(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=url, NST_STEPS="3", NST_HEARTBEAT_TTL="2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        NST_TORCH_THREADS="1", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def start_worker(server: RedisServer, name: str, log_dir: Path, **env: str) -> Worker:
    """Start ``python -m nst_core.celery_worker`` (what the ``nst-worker`` script runs)."""
    log = log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_core.celery_worker", "--device", "cpu", "--name", name],
        env=worker_env(server.url, **env), stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT,  # noqa: SIM115
    )  # fmt: skip
    return Worker(name, process, log)


def wait_ready(server: RedisServer, workers: list[Worker], timeout: float = 90) -> None:
    """Until every worker's heartbeat is in Redis and its Celery consumer has said it is ready."""
    client = server.client()
    deadline = time.monotonic() + timeout
    for w in workers:
        while True:
            if w.process.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited:\n{w.tail()}")
            text = w.log.read_text(errors="replace") if w.log.exists() else ""
            if client.exists(f"nst:worker:{w.name}") and "ready." in text:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {w.name} not ready:\n{w.tail()}")
            time.sleep(0.1)


async def wait_for_log(worker: Worker, text: str, timeout: float = 30) -> None:
    """Until the worker's log holds ``text``: a worker logs an outcome only after it has reported it."""
    deadline = time.monotonic() + timeout
    while not (worker.log.exists() and text in worker.log.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise AssertionError(f"worker {worker.name} never logged {text!r}:\n{worker.tail()}")
        await asyncio.sleep(0.05)


def make_job(job_id: str, photo: bytes, *, size: int = 64, preset: str = "starry-night") -> Job:
    return Job(job_id, photo, (StyleRef(preset=preset),), StyleSettings(size=size))


class Collector:
    """The bot's side of the contract in a test: every event, by job, with waiting."""

    def __init__(self) -> None:
        self.events: list[tuple[float, JobEvent]] = []
        self.by_job: dict[str, list[JobEvent]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def __call__(self, event: JobEvent) -> None:
        self.events.append((time.monotonic(), event))
        self.by_job[event.job_id].append(event)
        async with self._changed:
            self._changed.notify_all()

    def of_type(self, kind: type, job_id: str | None = None) -> list:
        return [e for _, e in self.events if isinstance(e, kind) and (job_id is None or e.job_id == job_id)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}") from None


def leftover_job_keys(client: redis.Redis) -> list[bytes]:
    """Per-job keys still in Redis: after every job is delivered there must be none."""
    keys: list[bytes] = []
    for pattern in ("nst:job:*", "nst:in:*", "nst:out:*", "nst:cancel:*"):
        keys += list(client.scan_iter(match=pattern))
    return keys


async def wait_clean(client: redis.Redis, timeout: float = 10) -> None:
    """Until no per-job key and no pending/running entry is left (cleanup follows delivery)."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftover_job_keys(client)
        queued = client.zcard("nst:pending") + client.hlen("nst:running")
        if not left and not queued:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind in redis: {left}, {queued} queued or running")
        await asyncio.sleep(0.05)


async def wait_idle(client: redis.Redis, timeout: float = 60) -> None:
    """Until the workers have finished every job (nothing pending or running)."""
    deadline = time.monotonic() + timeout
    while client.zcard("nst:pending") or client.hlen("nst:running"):
        if time.monotonic() > deadline:
            raise AssertionError("workers did not finish the queue")
        await asyncio.sleep(0.05)
