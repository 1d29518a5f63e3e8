"""Jobs through Redis and two real ``nst-worker`` processes: delivery, load, cancel, bot restart."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from celery_harness import Collector, make_job, wait_clean, wait_idle
from PIL import Image

from nst_core.celery_executor import CeleryExecutor
from nst_core.executor import Job, JobCancelled, JobDone, JobFailed, JobProgress, JobQueued, JobStarted, StyleRef
from nst_core.settings import Quality, StyleSettings

pytestmark = pytest.mark.slow


async def test_submit_delivers_an_image_and_leaves_nothing_behind(executor, redis_server, photo):
    ex, events = executor
    await ex.submit(make_job("basic-1", photo))
    await events.wait_for(lambda: events.of_type(JobDone, "basic-1"), 60, "JobDone")
    kinds = [type(e) for e in events.by_job["basic-1"]]
    assert kinds[0] is JobQueued
    assert JobStarted in kinds
    assert kinds.count(JobDone) == 1
    done = events.of_type(JobDone, "basic-1")[0]
    image = Image.open(io.BytesIO(done.image))
    image.load()
    assert max(image.size) == 64 and (done.width, done.height) == image.size
    assert done.seconds > 0
    await wait_clean(redis_server.client())
    assert await ex.queue_length() == 0
    assert "2 workers" in ex.device and "cpu" in ex.device


async def test_resubmitting_a_known_id_is_a_no_op(executor, photo):
    ex, events = executor
    job = make_job("dup-1", photo)
    await ex.submit(job)
    await ex.submit(job)
    await events.wait_for(lambda: events.of_type(JobDone, "dup-1"), 60, "JobDone")
    await events.wait_for(lambda: not ex._watch, 5, "nothing left to watch")
    assert len(events.of_type(JobStarted, "dup-1")) == 1
    assert len(events.of_type(JobDone, "dup-1")) == 1


async def test_two_workers_drain_30_jobs_from_10_users_each_exactly_once(executor, redis_server, photo, workers):
    ex, events = executor
    ids = [f"user{u}-job{k}" for k in range(3) for u in range(10)]
    for job_id in ids:
        await ex.submit(make_job(job_id, photo))
    first = events.of_type(JobQueued, ids[-1])[0]
    assert first.position >= 1 and first.eta_s is not None
    assert await ex.queue_length() >= 1

    def all_done() -> bool:
        return {e.job_id for e in events.of_type(JobDone)} >= set(ids)

    await events.wait_for(all_done, 120, "30 results")
    done = Counter(e.job_id for e in events.of_type(JobDone))
    assert all(done[i] == 1 for i in ids), done
    assert not events.of_type(JobFailed)
    # Both workers took part.
    await wait_clean(redis_server.client())
    assert await ex.queue_length() == 0
    logs = {w.name: w.log.read_text() for w in workers}
    assert all("user" in text for text in logs.values()), "one worker did every job"


async def test_a_fresh_bot_estimates_each_picture_in_its_workers_measured_seconds(executor, redis_server, photo):
    """No job has finished in this bot process yet, and already a large picture is
    estimated many times longer than a small one: each worker timed a step at boot and
    says so in its heartbeat.  Before, both were told the same median of recent jobs."""
    ex, events = executor
    assert all(w.step_per_pixel_s > 0 for w in await ex.workers())
    style = (StyleRef(preset="starry-night"),)
    large_job = Job("eta-large", photo, style, StyleSettings(size=512, quality=Quality.BEST))
    small_job = Job("eta-small", photo, style, StyleSettings(size=64, quality=Quality.FAST))
    # The first status message's figure, asked before the job is handed over.
    assert await ex.estimate(large_job) > 10 * await ex.estimate(small_job)
    await ex.submit(large_job)
    await ex.submit(small_job)
    large = events.of_type(JobQueued, "eta-large")[0].eta_s
    small = events.of_type(JobQueued, "eta-small")[0].eta_s
    assert large is not None and small is not None
    assert large > 10 * small, (large, small)
    await events.wait_for(lambda: len(events.of_type(JobDone)) == 2, 90, "both pictures")
    await wait_clean(redis_server.client())


async def test_cancel_a_queued_job(executor, redis_server, photo):
    ex, events = executor
    # Two long jobs occupy both workers, so the third waits in the queue.
    ex._steps = (400,)
    for job_id in ("busy-a", "busy-b"):
        await ex.submit(make_job(job_id, photo))
    ex._steps = None
    await ex.submit(make_job("queued-c", photo))
    await events.wait_for(lambda: len(events.of_type(JobStarted)) >= 2, 60, "both workers busy")
    assert await ex.position("queued-c") == 1
    assert await ex.cancel("queued-c") is True
    assert events.of_type(JobCancelled, "queued-c")
    assert await ex.position("queued-c") is None
    assert await ex.cancel("queued-c") is False
    # And the running ones: stopped within a few steps, long before their 400.
    for job_id in ("busy-a", "busy-b"):
        await events.wait_for(lambda j=job_id: events.of_type(JobProgress, j), 30, "progress")
        assert await ex.cancel(job_id) is True
    await events.wait_for(
        lambda: all(events.of_type(JobCancelled, j) for j in ("busy-a", "busy-b")), 15, "running jobs cancelled"
    )
    assert not events.of_type(JobDone)
    assert not events.of_type(JobStarted, "queued-c")
    await wait_clean(redis_server.client())
    assert await ex.queue_length() == 0


async def test_results_finished_while_the_bot_was_down_are_delivered_after_it_restarts(redis_server, photo, workers):
    first = Collector()
    ex = CeleryExecutor(redis_server.url)
    await ex.start(first)
    ids = [f"restart-{i}" for i in range(6)]
    for job_id in ids:
        await ex.submit(make_job(job_id, photo))
    await first.wait_for(lambda: first.of_type(JobStarted), 30, "a job started")
    await ex.stop()  # the bot goes down while the workers are busy
    delivered_before = {e.job_id for e in first.of_type(JobDone)}
    client = redis_server.client()
    await wait_idle(client)  # the workers finish everything with no bot reading

    second = Collector()
    ex2 = CeleryExecutor(redis_server.url)
    await ex2.start(second)
    try:
        missing = set(ids) - delivered_before
        assert missing, "every job finished before the restart; the test proves nothing"
        # Delivered by the time start() returns: the bot's recovery then sees them done.
        assert {e.job_id for e in second.of_type(JobDone)} >= missing
        every = Counter(e.job_id for e in first.of_type(JobDone) + second.of_type(JobDone))
        assert all(every[i] == 1 for i in ids), every
        await wait_clean(client)
    finally:
        await ex2.stop()


async def test_a_job_over_its_time_limit_fails_with_a_clear_reason(redis_server, photo, workers):
    events = Collector()
    ex = CeleryExecutor(redis_server.url, steps=(400,), timeout_s=1.0)
    await ex.start(events)
    try:
        await ex.submit(make_job("too-slow", photo))
        await events.wait_for(lambda: events.of_type(JobFailed, "too-slow"), 30, "JobFailed")
        assert "1 s limit" in events.of_type(JobFailed, "too-slow")[0].reason
        assert not events.of_type(JobDone)
        await wait_clean(redis_server.client())
    finally:
        await ex.stop()
