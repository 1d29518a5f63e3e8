"""Fixtures for the Celery executor's tests: a private Redis per module (helpers: ``celery_harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from celery_harness import Collector, RedisServer, Worker, start_worker, wait_ready

from nst_core.celery_executor import CeleryExecutor


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> bytes:
    return (content_dir / "astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def workers(
    request: pytest.FixtureRequest, redis_server: RedisServer, worker_logs: Path, preset_cache: Path
) -> Iterator[list[Worker]]:
    """Two real ``nst-worker`` processes on this module's Redis, started once per module."""
    prefix = request.module.__name__.rsplit("_", 1)[-1][:3]
    started = [start_worker(redis_server, f"{prefix}{i}", worker_logs) for i in (1, 2)]
    try:
        wait_ready(redis_server, started)
        yield started
    finally:
        for w in started:
            w.terminate()


@pytest.fixture
async def executor(redis_server: RedisServer, workers: list[Worker]) -> AsyncIterator[tuple[CeleryExecutor, Collector]]:
    collector = Collector()
    ex = CeleryExecutor(redis_server.url)
    await ex.start(collector)
    yield ex, collector
    await ex.stop()
