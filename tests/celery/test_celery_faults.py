"""Faults with real processes: a worker killed mid-job, a redelivered message, Redis restarted."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from celery_harness import (
    Collector,
    RedisServer,
    free_port,
    make_job,
    start_worker,
    wait_clean,
    wait_for_log,
    wait_ready,
)

from nst_core.celery_app import create_app, send_job
from nst_core.celery_executor import CeleryExecutor
from nst_core.celery_worker import WorkerConfig, WorkerRuntime
from nst_core.executor import Hold, JobCancelled, JobDone, JobFailed, JobProgress, JobQueued, JobStarted

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def own_queue(tmp_path: Path, worker_logs: Path, name: str) -> AsyncIterator[tuple]:
    """A private Redis with one worker and an executor on it, for tests that take the queue's
    only worker (or its Redis) away, which the module's shared pair must not lose."""
    server = RedisServer(tmp_path)
    server.start()
    worker = start_worker(server, name, worker_logs)
    events = Collector()
    ex = CeleryExecutor(server.url)
    try:
        wait_ready(server, [worker])
        await ex.start(events)
        yield server, worker, ex, events
    finally:
        await ex.stop()
        worker.kill()
        server.stop()


async def test_a_worker_killed_mid_job_has_its_job_rerun_by_the_other_and_delivered_once(
    executor, redis_server, workers, photo
):
    ex, events = executor
    ex._steps = (60,)  # a few seconds on one CPU thread: time to kill it half-way
    await ex.submit(make_job("victim", photo))
    await events.wait_for(lambda: events.of_type(JobProgress, "victim"), 60, "the job running")
    client = redis_server.client()
    owner = client.hget("nst:running", "victim").decode()
    victim = next(w for w in workers if w.name == owner)
    victim.kill()  # SIGKILL: no chance to clean up, reject or acknowledge anything

    await events.wait_for(lambda: events.of_type(JobDone, "victim"), 60, "the rerun's result")
    survivor = next(w for w in workers if w.name != owner)
    assert len(events.of_type(JobDone, "victim")) == 1
    assert len(events.of_type(JobStarted, "victim")) == 2  # the first run and the rerun
    requeued = events.of_type(JobQueued, "victim")
    sequence = [type(e).__name__ for e in events.by_job["victim"] if not isinstance(e, JobProgress)]
    assert len(requeued) >= 2, f"the bot was not told that its job went back to the queue; it heard {sequence}"
    await wait_for_log(survivor, "job victim: done")
    await wait_clean(client)
    workers.remove(victim)


async def test_a_redelivered_message_for_a_delivered_job_does_nothing(executor, redis_server, workers, photo):
    ex, events = executor
    await ex.submit(make_job("once", photo))
    await events.wait_for(lambda: events.of_type(JobDone, "once"), 60, "JobDone")
    await wait_clean(redis_server.client())
    # What the transport does with an orphaned message after its visibility timeout.
    app = create_app(redis_server.url)
    await asyncio.to_thread(send_job, app, "once")
    for _ in range(100):
        if any("job once: not running it (gone)" in w.log.read_text() for w in workers):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no worker saw the redelivered message")
    await asyncio.sleep(0.3)
    assert len(events.of_type(JobDone, "once")) == 1
    assert len(events.of_type(JobStarted, "once")) == 1
    app.close()


async def test_redis_restart_keeps_queued_jobs_and_the_executor_keeps_answering(executor, redis_server, workers, photo):
    ex, events = executor
    assert workers, "needs a live worker"
    ex._steps = (20,)
    ids = [f"aof-{i}" for i in range(4)]
    for job_id in ids:
        await ex.submit(make_job(job_id, photo))
    await events.wait_for(lambda: events.of_type(JobStarted), 30, "a job running")

    redis_server.stop()

    # Every unfinished job is reported delayed: JobQueued with no ETA.
    def delayed(job_id: str) -> bool:
        return any(e.eta_s is None for e in events.of_type(JobQueued, job_id)) or bool(events.of_type(JobDone, job_id))

    await events.wait_for(lambda: all(delayed(j) for j in ids), 15, "delayed notices")
    # The executor still answers and accepts work while Redis is down.
    await ex.submit(make_job("during-outage", photo))
    assert events.of_type(JobQueued, "during-outage")[-1].eta_s is None
    assert await ex.queue_length() >= 1
    assert await ex.position("during-outage") is not None
    await asyncio.sleep(1.5)

    redis_server.start()  # same port, same append-only file
    everything = [*ids, "during-outage"]
    await events.wait_for(
        lambda: {e.job_id for e in events.of_type(JobDone)} >= set(everything), 90, "every job after the restart"
    )
    done = Counter(e.job_id for e in events.of_type(JobDone))
    assert all(done[j] == 1 for j in everything), done
    assert not events.of_type(JobFailed)
    assert ex.connected
    await wait_clean(redis_server.client(), 15)
    # Celery's multi-line warning about a choice made on purpose, once per reconnect, used to fill the logs.
    assert not any("CPendingDeprecationWarning" in w.log.read_text() for w in workers)


async def test_a_job_stored_but_never_sent_is_sent_by_a_worker(executor, redis_server, workers, photo):
    """The bot died between storing a job and sending its message: the workers notice."""
    import time

    from nst_core.celery_store import encode_inputs

    ex, events = executor
    fields = encode_inputs(make_job("orphan", photo))
    args = ["orphan", time.time() - 60, 3600, fields.pop("meta"), fields.pop("content")]
    await ex._submit_script(keys=ex._keys.for_job("orphan"), args=args)
    await events.wait_for(lambda: events.of_type(JobDone, "orphan"), 30, "the orphan's result")
    assert len(events.of_type(JobDone, "orphan")) == 1
    await wait_clean(redis_server.client())


async def test_a_job_whose_message_was_lost_after_sending_is_sent_again_by_an_idle_worker(
    executor, redis_server, workers, photo
):
    """Celery's Redis transport can drop a message it took on a connection that a Redis restart
    replaced: the job, marked sent, then said "You're next" for good while the workers idled."""
    import time

    from nst_core.celery_store import encode_inputs

    ex, events = executor
    fields = encode_inputs(make_job("dropped", photo))
    args = ["dropped", time.time() - 60, 3600, fields.pop("meta"), fields.pop("content")]
    await ex._submit_script(keys=ex._keys.for_job("dropped"), args=args)
    await ex._mark_sent_script(keys=ex._keys.for_job("dropped"), args=[])  # sent, and then lost
    await events.wait_for(lambda: events.of_type(JobDone, "dropped"), 30, "the lost job's result")
    assert len(events.of_type(JobDone, "dropped")) == 1
    await wait_clean(redis_server.client())
    logs = "".join(w.log.read_text(errors="replace") for w in workers)
    assert logs.count("job dropped has waited") == 1, "sent again once, by one worker"


async def test_bot_and_worker_started_before_redis_catch_up_when_it_appears(tmp_path, worker_logs, photo, preset_cache):
    """Start order does not matter: nothing crashes while Redis is missing, and the job runs once it is up."""
    server = RedisServer(tmp_path)  # not started yet
    worker = start_worker(server, "early", worker_logs)
    events = Collector()
    ex = CeleryExecutor(server.url, start_timeout_s=3)
    try:
        await asyncio.wait_for(ex.start(events), 10)
        assert not ex.connected
        await ex.submit(make_job("early-job", photo))
        assert events.of_type(JobQueued, "early-job")[-1].eta_s is None  # delayed, not failed
        assert await ex.queue_length() == 1
        await wait_for_log(worker, "redis unreachable")  # the worker is up and finds no Redis
        server.start()
        await events.wait_for(lambda: events.of_type(JobDone, "early-job"), 90, "the job after redis came up")
        assert ex.connected
        assert len(events.of_type(JobDone, "early-job")) == 1
    finally:
        await ex.stop()
        worker.terminate()
        server.stop()


async def test_a_redis_that_refuses_writes_holds_jobs_until_it_takes_them_again(tmp_path, worker_logs, photo):
    """Redis answers but takes no writes: here a primary demoted to a replica by a failover.

    That drops no connection.  A refused progress report used to fail the painting
    ("something went wrong in the painter"), a refused result was dropped with a
    traceback, leaving the job "running" for hours, and a request submitted meanwhile
    raised into the bot.  Own Redis and worker: an idle Celery worker exits when its
    Redis is demoted under it (kombu's "Unrecoverable error"), which would take the
    module's shared workers down; Compose restarts such a worker.
    """
    async with own_queue(tmp_path, worker_logs, "failover") as (server, worker, ex, events):
        ex._steps = (40,)
        await ex.submit(make_job("painting", photo))
        await events.wait_for(lambda: events.of_type(JobProgress, "painting"), 60, "the job running")
        client = server.client()
        log_from = len(worker.log.read_text())
        client.replicaof("127.0.0.1", free_port())  # its new primary is not up yet
        try:
            await ex.submit(make_job("sent-meanwhile", photo))
            assert events.of_type(JobQueued, "sent-meanwhile")[-1].eta_s is None  # delayed, not failed
            for _ in range(1200):  # the painting goes on, ends, and its result is refused
                if "outcome of painting: redis refuses writes" in worker.log.read_text()[log_from:]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the worker's result was never refused:\n{worker.tail()}")
            await asyncio.sleep(1.0)
            assert not events.of_type(JobDone) and not events.of_type(JobFailed)
        finally:
            client.replicaof("no", "one")

        await events.wait_for(
            lambda: {e.job_id for e in events.of_type(JobDone)} == {"painting", "sent-meanwhile"}, 90,
            "both results once redis takes writes",
        )  # fmt: skip
        assert len(events.of_type(JobDone)) == 2
        assert not events.of_type(JobFailed)
        assert ex.connected
        await wait_clean(client, 15)
        assert "Traceback" not in worker.log.read_text()[log_from:]

        # Idle now: Celery's own Redis transport gives up on a demoted Redis.  The worker
        # must then exit with a failure, so that a supervisor (Compose, systemd) restarts it.
        client.replicaof("127.0.0.1", free_port())
        try:
            for _ in range(200):
                if worker.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            client.replicaof("no", "one")
        assert worker.process.poll() not in (None, 0), f"exit code {worker.process.poll()}:\n{worker.tail()}"


async def test_a_job_whose_worker_died_goes_before_the_ones_that_waited_behind_it(tmp_path, worker_logs, photo):
    """It went to the back of the line: a user whose picture was half painted then waited for
    every picture sent after theirs.  Own Redis and worker: one worker makes the order plain."""
    async with own_queue(tmp_path, worker_logs, "first") as (server, worker, ex, events):
        ex._steps = (60,)  # a few seconds on one CPU thread: time to kill the worker half-way
        await ex.submit(make_job("early", photo))
        await events.wait_for(lambda: events.of_type(JobProgress, "early"), 60, "the job running")
        ex._steps = (3,)
        for job_id in ("later-1", "later-2"):
            await ex.submit(make_job(job_id, photo))
        worker.kill()
        # A reaper under the dead worker's name puts its job back at once, with no worker
        # about to take it: where the job now stands can be asked.
        reaper = WorkerRuntime(WorkerConfig(redis_url=server.url, name="first"), "cpu", "test")
        app = create_app(server.url)
        reaper.send_task = lambda job_id, again: send_job(app, job_id, again=again)
        try:
            assert await asyncio.to_thread(reaper.reap) == ["early"]
            assert [await ex.position(j) for j in ("early", "later-1", "later-2")] == [1, 2, 3]

            def moved_back() -> bool:  # told at once, not at the next progress or start
                return [events.of_type(JobQueued, j)[-1].position for j in ("later-1", "later-2")] == [2, 3]

            await events.wait_for(moved_back, 5, "the pictures behind it told they moved back a place")
        finally:
            reaper.redis.close()
            app.close()
        back = start_worker(server, "again", worker_logs)
        try:
            done = ("early", "later-1", "later-2")
            await events.wait_for(lambda: all(events.of_type(JobDone, j) for j in done), 120, "every picture")
        finally:
            back.terminate()
        second_runs = [e.job_id for e in events.of_type(JobStarted)][1:]
        assert second_runs == ["early", "later-1", "later-2"]


async def test_a_picture_cancelled_as_its_only_worker_dies_is_closed_with_no_worker_left(tmp_path, worker_logs, photo):
    """Cancelled while the dead worker's heartbeat was still fresh, it waited for a worker to come
    back and reap it: "No painter is online" for good, after "Cancelled 1 picture"."""
    async with own_queue(tmp_path, worker_logs, "lone") as (server, worker, ex, events):
        ex._steps = (60,)
        await ex.submit(make_job("doomed", photo))
        await events.wait_for(lambda: events.of_type(JobProgress, "doomed"), 60, "the job running")
        worker.kill()
        assert await ex.cancel("doomed")  # its heartbeat still stands: the worker is asked to stop
        assert not events.of_type(JobCancelled, "doomed")
        await events.wait_for(lambda: events.of_type(JobCancelled, "doomed"), 30, "the cancel closing the job")
        assert not server.client().exists("nst:job:doomed")


async def test_with_the_only_worker_gone_queued_jobs_hear_so_and_run_when_one_is_back(tmp_path, worker_logs, photo):
    """The last worker died, and the job behind its own was still told "ready in about 20 s".

    Own Redis and worker: the module's pair would not leave the queue workerless."""
    async with own_queue(tmp_path, worker_logs, "only") as (server, worker, ex, events):
        assert ex.hold is None
        ex._steps = (60,)  # a few seconds on one CPU thread: time to kill the worker half-way
        await ex.submit(make_job("painting", photo))
        await events.wait_for(lambda: events.of_type(JobProgress, "painting"), 60, "the job running")
        ex._steps = (3,)  # quick once its turn comes
        left = events.of_type(JobProgress, "painting")[-1].eta_s
        await ex.submit(make_job("behind", photo))
        told = events.of_type(JobQueued, "behind")[-1]
        assert told.hold is None and told.eta_s is not None
        # What the painting has left, then its own: it counted the painting as half a "typical"
        # picture (a default 512 px one), several times too short behind a large picture.
        assert told.eta_s == pytest.approx(left + ex._durations.predict(ex._schedules["behind"]), rel=0.35)

        worker.kill()

        def held() -> bool:
            return events.of_type(JobQueued, "behind")[-1].hold is Hold.NO_WORKER

        await events.wait_for(held, 30, "'no worker online' for the queued job")
        assert events.of_type(JobQueued, "behind")[-1].eta_s is None  # no made-up time
        # Not a frozen "Painting…" either: the running one waits for a worker as well.
        assert events.of_type(JobQueued, "painting")[-1].hold is Hold.NO_WORKER
        # Cancelled now, it is cancelled now: it used to wait for a worker to come back and say so.
        assert await ex.cancel("painting")
        assert events.of_type(JobCancelled, "painting")
        back = start_worker(server, "only", worker_logs)  # its old name: it would rerun the job it was killed in
        try:
            await events.wait_for(lambda: events.of_type(JobDone, "behind"), 120, "the picture behind")
            assert ex.hold is None
            assert not events.of_type(JobDone, "painting") and len(events.of_type(JobStarted, "painting")) == 1
        finally:
            back.terminate()
