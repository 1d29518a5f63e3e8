"""A worker restarted under its old name, a job that keeps losing its workers, a cancel racing a send.

No ``workers`` fixture here: the tests that need a worker share one with a fixed
name, which they SIGKILL and start again under that name, as Docker does with a
container (``init: true`` gives the new process the same PID, and the hostname
is kept, so the default name ``nst-gpu-<pid>@<host>`` comes back too).  With no
other worker around, only the restarted one can pick its old job up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery_harness import (
    Collector,
    RedisServer,
    Worker,
    leftover_job_keys,
    make_job,
    start_worker,
    wait_clean,
    wait_for_log,
    wait_ready,
)

from nst_core.celery_executor import CeleryExecutor
from nst_core.celery_store import CANCEL, GAVE_UP_REASON, MAX_ATTEMPTS, SUBMIT, Keys, encode_inputs
from nst_core.celery_worker import WorkerConfig, WorkerRuntime
from nst_core.executor import JobCancelled, JobDone, JobFailed, JobProgress, JobStarted

pytestmark = pytest.mark.slow


@dataclass
class SameNameWorker:
    """One ``nst-worker`` that always comes back under the same name (each run logs to its own file)."""

    server: RedisServer
    name: str
    log_dir: Path
    worker: Worker | None = None
    runs: int = 0

    def start(self) -> None:
        self.runs += 1
        log_dir = self.log_dir / f"run{self.runs}"
        log_dir.mkdir()
        self.worker = start_worker(self.server, self.name, log_dir)
        wait_ready(self.server, [self.worker])

    def restart(self) -> None:
        """SIGKILL (no chance to clean up or requeue anything), then the same name again."""
        assert self.worker is not None
        self.worker.kill()
        self.start()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("run*/*.log")))


@pytest.fixture(scope="module")
def same_name(redis_server: RedisServer, worker_logs: Path, preset_cache: Path) -> Iterator[SameNameWorker]:
    holder = SameNameWorker(redis_server, "nst-cpu-1@box", worker_logs)
    holder.start()
    try:
        yield holder
    finally:
        if holder.worker is not None:
            holder.worker.terminate()


@pytest.fixture
async def long_jobs(redis_server: RedisServer) -> AsyncIterator[tuple[CeleryExecutor, Collector]]:
    """An executor whose jobs take a few seconds on one CPU thread: time to kill their worker."""
    events = Collector()
    ex = CeleryExecutor(redis_server.url, steps=(60,))
    await ex.start(events)
    yield ex, events
    await ex.stop()


async def test_a_worker_restarted_under_its_old_name_reruns_the_job_it_was_killed_in(
    long_jobs, same_name, redis_server, photo
):
    ex, events = long_jobs
    await ex.submit(make_job("same-name", photo))
    await events.wait_for(lambda: events.of_type(JobProgress, "same-name"), 60, "the job running")
    client = redis_server.client()
    assert client.hget("nst:running", "same-name") == same_name.name.encode()

    same_name.restart()  # its heartbeat is back under the old key before any reaper gives up on it

    # Before the fix nobody requeued it: the only live heartbeat was the owner's own
    # (the transport would have redelivered the message after its 6 h visibility timeout).
    await events.wait_for(lambda: events.of_type(JobDone, "same-name"), 60, "the rerun's result")
    assert len(events.of_type(JobDone, "same-name")) == 1
    assert len(events.of_type(JobStarted, "same-name")) == 2  # the killed run and the rerun
    assert f"an earlier run of {same_name.name} was lost while running job same-name" in same_name.log_text()
    await wait_clean(client)


async def test_a_job_whose_last_attempt_loses_its_worker_fails_instead_of_running_again(
    long_jobs, same_name, redis_server, photo
):
    ex, events = long_jobs
    await ex.submit(make_job("doomed", photo))
    await events.wait_for(lambda: events.of_type(JobProgress, "doomed"), 60, "the job running")
    client = redis_server.client()
    # As if two earlier workers had already died under it: this run is its last attempt.
    client.hset("nst:job:doomed", "attempts", MAX_ATTEMPTS)

    same_name.restart()

    await events.wait_for(
        lambda: events.of_type(JobFailed, "doomed") or events.of_type(JobDone, "doomed"), 60, "an outcome"
    )
    assert not events.of_type(JobDone, "doomed"), "the job was run a fourth time"
    [failed] = events.of_type(JobFailed, "doomed")
    assert failed.reason == GAVE_UP_REASON and not failed.retryable
    assert len(events.of_type(JobStarted, "doomed")) == 1
    # Failed by the reaper that found it, not requeued first (the claim's own check is the next test's).
    assert same_name.worker is not None
    await wait_for_log(same_name.worker, "was lost while running job doomed, its last attempt: job failed")
    await wait_clean(client)


async def test_a_message_for_a_job_out_of_attempts_fails_it_instead_of_running_it(
    long_jobs, same_name, redis_server, photo
):
    """The claim checks too: a job requeued by a worker from before the limit, or a message the
    transport redelivers after its visibility timeout, must not start a fourth run."""
    ex, events = long_jobs
    fields = encode_inputs(make_job("cursed", photo))
    args = ["cursed", time.time(), 3600, fields.pop("meta"), fields.pop("content")]
    await ex._submit_script(keys=ex._keys.for_job("cursed"), args=args)
    client = redis_server.client()
    client.hset("nst:job:cursed", "attempts", MAX_ATTEMPTS)
    await ex._send("cursed")

    await events.wait_for(
        lambda: events.of_type(JobFailed, "cursed") or events.of_type(JobDone, "cursed"), 60, "an outcome"
    )
    assert not events.of_type(JobStarted, "cursed")
    [failed] = events.of_type(JobFailed, "cursed")
    assert failed.reason == GAVE_UP_REASON
    await wait_clean(client)


async def test_a_cancel_while_the_message_is_sent_leaves_no_job_key_behind(redis_server, photo):
    events = Collector()
    ex = CeleryExecutor(redis_server.url)
    await ex.start(events)
    try:
        send = ex._send

        async def cancel_then_send(job_id: str) -> None:
            # The user's Cancel lands between storing the job and marking its message sent.
            assert await ex.cancel(job_id) is True
            await send(job_id)

        ex._send = cancel_then_send  # type: ignore[method-assign]
        await ex.submit(make_job("raced", photo))
        assert events.of_type(JobCancelled, "raced")
        client = redis_server.client()
        assert not client.exists("nst:job:raced"), client.hgetall("nst:job:raced")  # was {sent: 1}, no expiry
        assert all(client.ttl(key) > 0 for key in leftover_job_keys(client))
    finally:
        await ex.stop()


def test_a_worker_resending_a_job_cancelled_meanwhile_leaves_no_job_key_behind(redis_server, photo):
    """The same race on a worker: it sends a job that had no message while the bot cancels it."""
    runtime = WorkerRuntime(WorkerConfig(redis_url=redis_server.url, prefix="race"), "cpu", "test")
    client = redis_server.client()
    keys = runtime.keys.for_job("resent")
    fields = encode_inputs(make_job("resent", photo))
    submit, cancel = client.register_script(SUBMIT), client.register_script(CANCEL)
    submit(keys=keys, args=["resent", time.time() - 60, 3600, fields.pop("meta"), fields.pop("content")])

    def cancel_then_send(job_id: str, again: bool) -> None:
        assert cancel(keys=keys, args=[job_id, time.time(), 3600, runtime.keys.worker_prefix]) == b"cancelled"

    runtime.send_task = cancel_then_send
    assert runtime.resend_unsent() == ["resent"]
    assert not client.exists(runtime.keys.job("resent")), client.hgetall(runtime.keys.job("resent"))
    runtime.redis.close()


def test_a_cancel_for_a_job_whose_worker_seems_dead_still_stops_that_worker(redis_server, photo):
    """The heartbeat lapses when the worker is dead, but also when Redis or its host stalls: the
    cancel closes the job at once and keeps the flag, which such a worker reads between steps
    (it deleted the flag too, and a worker that was only paused painted on to the end)."""
    client = redis_server.client()
    keys = Keys("stall")
    job_keys = keys.for_job("stalled")
    fields = encode_inputs(make_job("stalled", photo))
    submit, cancel = client.register_script(SUBMIT), client.register_script(CANCEL)
    submit(keys=job_keys, args=["stalled", time.time(), 3600, fields.pop("meta"), fields.pop("content")])
    client.hset(keys.job("stalled"), "state", "running")  # taken by a worker whose heartbeat then lapsed
    client.hset(keys.running, "stalled", "paused-worker")
    assert cancel(keys=job_keys, args=["stalled", time.time(), 3600, keys.worker_prefix]) == b"cancelled"
    assert client.exists(keys.cancel("stalled")) and client.ttl(keys.cancel("stalled")) > 0
    assert not client.exists(keys.job("stalled")) and not client.hexists(keys.running, "stalled")
    client.delete(keys.cancel("stalled"))
