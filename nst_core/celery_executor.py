"""``CeleryExecutor``: the bot stays one process, the painting runs on ``nst-worker``s.

Selected with ``NST_EXECUTOR=celery`` and ``REDIS_URL``.  It speaks the same
``Executor`` contract as ``LocalExecutor``, so the handlers do not change.

How a job travels (keys and scripts: ``nst_core.celery_store``):

1. ``submit`` writes the inputs to Redis (with an expiry), adds the id to the
   pending set and sends a Celery message that carries only the id.
2. A worker claims the job atomically, runs it, and appends ``started`` /
   ``done`` events to a Redis stream (progress to a second, short one); the image
   goes to a key.
3. This executor reads the stream through a consumer group, turns entries into
   events for the bot, and once an outcome has been handed over deletes the
   job's keys and acknowledges the entry.

Why a stream with a consumer group rather than pub/sub or Celery results:
entries wait in Redis (and in its append-only file) while the bot is down, so
a restarted bot picks up every result that finished in between, and an entry
the previous bot read but did not acknowledge (it crashed mid-delivery) is read
again.  A result is stored once per job id (first finisher wins, in Lua) and
deleted after delivery, so a redelivered message or a rerun never produces a
second ``JobDone``; the one window left, a bot crash between handing a result
to its handler and acknowledging it, replays that one ``JobDone`` after the
restart, which the bot deduplicates by job id in its database.

**Redis outage.**  Nothing here raises into the bot.  ``submit`` keeps the job
in a local outbox and sends it when Redis is back; ``cancel`` is remembered and
applied then.  Every unfinished job the executor knows of is reported as
*delayed*: ``JobQueued(job_id, position, eta_s=None)`` (position as last known,
0 for a job that was running).  ``eta_s=None`` on a ``JobQueued`` means "the
queue is unreachable; the job is safe and will continue".  The executor
reconnects with exponential backoff (0.1 s up to 5 s) and then sends fresh
positions; running jobs resume their progress events on their own.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nst_core.celery_store import (
    CANCEL,
    DEFAULT_JOB_TTL_S,
    EVENT_CONSUMER,
    EVENT_GROUP,
    FORGET,
    MARK_SENT,
    SUBMIT,
    TERMINAL,
    Keys,
    WorkerInfo,
    decode_event,
    encode_inputs,
    redis_url,
    refuses_writes,
)
from nst_core.executor import (
    DurationModel,
    EventSink,
    Executor,
    Hold,
    Job,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
)
from nst_core.schedule import Scale, StepCost, plan_for
from nst_core.settings import StyleSettings

log = logging.getLogger(__name__)

#: For a job whose record Redis lost; retryable, so the bot submits it again.
LOST_REASON = "the queue lost this picture"

#: The long side a worker paints a job that sets none (``device.default_size`` on a CPU);
#: only the ETA uses it, and the bot always sets a size.
GUESSED_DEFAULT_SIZE = 512
#: At most this often, a running job's progress makes the jobs behind it re-estimate their wait.
REESTIMATE_S = 5.0
#: After an outage, how much longer than the usual 5 s the first look at the workers waits:
#: a worker beats every third of its heartbeat TTL (5 s by default).
WORKER_BEAT_GRACE_S = 2.0

#: Errors that mean "Redis is not reachable right now" (kombu raises its own for sends).
OUTAGE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
try:  # kombu wraps a failed publish in OperationalError
    from kombu.exceptions import OperationalError as _KombuOperationalError

    OUTAGE = (*OUTAGE, _KombuOperationalError)
except ImportError:  # pragma: no cover - celery[redis] brings kombu
    pass


def _is_outage(exc: BaseException) -> bool:
    """Redis cannot take this now but will: unreachable, or refusing writes (see ``refuses_writes``)."""
    return isinstance(exc, OUTAGE) or refuses_writes(exc)


@dataclass
class _Watched:
    """What the executor last told the bot about an unfinished job."""

    state: str = "queued"  # queued | running
    position: int | None = None
    eta_s: float | None = None
    hold: Hold | None = None


class CeleryExecutor(Executor):
    """Jobs go through Redis to any number of ``nst-worker`` processes.

    ``steps`` overrides the step schedule of every job it submits (tests and
    smoke runs), like ``LocalExecutor(steps=...)``; workers also honour
    ``NST_STEPS``.  ``timeout_s`` travels with each job: the worker stops a job
    that runs longer and reports ``JobFailed``, as ``LocalExecutor(timeout_s=...)``
    does.  The time waiting in the queue does not count.
    """

    def __init__(
        self,
        redis_url_: str | None = None,
        *,
        steps: tuple[int, ...] | None = None,
        timeout_s: float | None = None,
        prefix: str = "nst",
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        block_ms: int = 1000,
        start_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self.redis_url = redis_url(redis_url_)
        self._steps = steps
        self._timeout_s = timeout_s
        self._keys = Keys(prefix)
        self._job_ttl_s = job_ttl_s
        self._block_ms = block_ms
        self._start_timeout_s = start_timeout_s
        self._redis: aioredis.Redis | None = None
        self._app: Any = None  # celery.Celery, created on start (keeps celery out of import time)
        self._send_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nst-celery-send")
        self._on_event: EventSink | None = None
        self._task: asyncio.Task | None = None
        self._watch: dict[str, _Watched] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._outbox: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._cancel_later: set[str] = set()
        self._submitting: set[str] = set()
        self._stopping = False
        self._connected = False  # reading the stream right now
        self._ready = False  # consumer group exists and the backlog has been read
        self._durations = DurationModel()
        self._durations_loaded = False
        #: The schedule of each job this process submitted, for its own ETA; the
        #: workers' default size is a guess here, but the bot always sets one.
        self._schedules: dict[str, list[Scale] | None] = {}
        self._workers: list[WorkerInfo] = []
        self._workers_cost: StepCost | None = None
        self._workers_at = 0.0
        self._reestimated_at = 0.0
        self._outage = False  # Redis unreachable or refusing writes, as last seen
        self._cancelling: set[str] = set()  # cancelled while running: waiting for the worker to stop
        self._last_length = 0
        self._submit_lock = asyncio.Lock()

    # -- the contract ------------------------------------------------------------------

    @property
    def device(self) -> str:
        if not self._workers:
            return "celery: no worker online" if self._workers_at else "celery workers (not yet seen)"
        counts = collections.Counter(w.description for w in self._workers)
        parts = ", ".join(f"{n} × {d}" if n > 1 else d for d, n in counts.most_common())
        return f"celery: {len(self._workers)} worker{'s' if len(self._workers) != 1 else ''} ({parts})"

    @property
    def hold(self) -> Hold | None:
        """``UNREACHABLE`` while Redis is; ``NO_WORKER`` once the workers' heartbeats were
        read and none is current (not before that first look: the bot then knows nothing
        either way)."""
        if self._outage:
            return Hold.UNREACHABLE
        return Hold.NO_WORKER if self._ready and self._workers_at and not self._workers else None

    @property
    def connected(self) -> bool:
        """False while Redis is unreachable (jobs are then reported as delayed)."""
        return self._connected

    async def start(self, on_event: EventSink) -> None:
        from nst_core.celery_app import create_app

        self._on_event = on_event
        self._redis = aioredis.Redis.from_url(
            self.redis_url,
            socket_connect_timeout=2,
            socket_timeout=max(5.0, self._block_ms / 1000 + 5),
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        )
        self._submit_script = self._redis.register_script(SUBMIT)
        self._cancel_script = self._redis.register_script(CANCEL)
        self._forget_script = self._redis.register_script(FORGET)
        self._mark_sent_script = self._redis.register_script(MARK_SENT)
        self._app = create_app(self.redis_url)
        # Hand over what finished while the bot was down before returning, so the caller's
        # own recovery (which resubmits what its database still calls active) sees those
        # jobs as done rather than resubmitting them.  Redis down: carry on, the loop retries.
        try:
            await asyncio.wait_for(self._catch_up(), self._start_timeout_s)
        except (TimeoutError, *OUTAGE, ResponseError) as exc:
            log.warning("redis not reachable at start (%s); jobs will be delayed until it is", exc or "timeout")
            self._ready = False
        self._task = asyncio.create_task(self._run_forever(), name="celery-executor")

    async def _catch_up(self) -> None:
        await self._setup()
        while await self._read_once(">", block=False):
            pass

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """``grace_s`` changes nothing here: a worker finishes its job whatever the bot does."""
        self._stopping = True
        if self._task is not None:
            # A cancel that lands inside redis-py's blocking read can be absorbed there; the
            # loop also checks ``_stopping`` after every read (at most ``block_ms``), so it ends.
            for _ in range(3):
                self._task.cancel()
                done, _pending = await asyncio.wait({self._task}, timeout=self._block_ms / 1000 + 0.5)
                if done:
                    break
            if not self._task.done():
                log.warning("celery executor loop did not stop")
            self._task = None
        await self._reported()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        self._send_pool.shutdown(wait=True, cancel_futures=True)
        if self._app is not None:
            with contextlib.suppress(Exception):
                self._app.close()

    async def submit(self, job: Job) -> None:
        if job.id in self._finished:
            self._finished.pop(job.id)  # a deliberate resubmission after an outcome: run it again
        if job.id in self._outbox:
            await self._emit(JobQueued(job.id, self._outbox_position(job.id), None))
            return
        watched = self._watch.setdefault(job.id, _Watched())
        self._schedules[job.id] = plan_for(job.content, job.settings, GUESSED_DEFAULT_SIZE, self._steps)
        self._submitting.add(job.id)  # not stored yet: not "lost" either (see _report_lost)
        try:
            state = await self._submit_remote(job)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            log.warning("job %s: redis unreachable or refusing writes (%s); it is sent when redis is back", job.id, exc)
            self._outbox[job.id] = job  # the loop sends it as soon as redis answers
            await self._emit(JobQueued(job.id, self._outbox_position(job.id), None))
            return
        finally:
            self._submitting.discard(job.id)
        if state == "queued":
            await self._announce(job.id, force=True)
        elif state == "running":
            watched.state, watched.position = "running", 0

    async def cancel(self, job_id: str) -> bool:
        if self._outbox.pop(job_id, None) is not None:
            await self._finish(job_id, JobCancelled(job_id))
            return True
        if job_id in self._finished:
            return False
        try:
            status = await self._cancel_remote(job_id)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            if job_id not in self._watch:
                return False
            self._cancel_later.add(job_id)  # applied when redis is back
            # Seen here before the loop sees it: the caller tells its user the painter can't hear
            # the cancel yet.  The loop then sets up again, as after any outage: it applies the
            # cancel and clears the flag, even after a blip its own reads never met.
            self._outage, self._ready = True, False
            return True
        if status == "cancelled":
            await self._finish(job_id, JobCancelled(job_id))
            await self._announce_all()
            return True
        if status == "cancelling":
            self._cancelling.add(job_id)  # asked again at each look at the workers: see _recancel
        return status == "cancelling"

    async def queue_length(self) -> int:
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.zcard(self._keys.pending)
            pipe.hlen(self._keys.running)
            pending, running = await pipe.execute()
            self._last_length = int(pending) + int(running)
        except OUTAGE:
            pass
        return self._last_length + len(self._outbox)

    async def position(self, job_id: str) -> int | None:
        if job_id in self._outbox:
            return self._outbox_position(job_id)
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.hexists(self._keys.running, job_id)
            pipe.zrank(self._keys.pending, job_id)
            running, rank = await pipe.execute()
        except OUTAGE:
            watched = self._watch.get(job_id)
            return watched.position if watched else None
        if running:
            return 0
        return None if rank is None else int(rank) + 1

    async def eta(self, job_id: str) -> float | None:
        watched = self._watch.get(job_id)
        return watched.eta_s if watched is not None else None

    def picture_seconds(self, size: tuple[int, int], settings: StyleSettings) -> float | None:
        return self._durations.picture_seconds(size, settings, GUESSED_DEFAULT_SIZE, self._steps)

    async def estimate(self, job: Job) -> float | None:
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.zcard(self._keys.pending)
            pipe.hlen(self._keys.running)
            pending, running = await pipe.execute()
        except OUTAGE:
            return None  # the bot falls back on its own guess; the job itself will say "delayed"
        schedule = plan_for(job.content, job.settings, GUESSED_DEFAULT_SIZE, self._steps)
        return self._eta_for(schedule, int(pending) + 1, int(running))

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is current (name, device, current job)."""
        await self._refresh_workers(force=True)
        return list(self._workers)

    async def painters(self) -> list[str]:
        """Each live worker by its name (``NST_WORKER_NAME``), so that an operator can tell them apart."""
        try:
            found = await self.workers()
        except Exception as exc:
            if not _is_outage(exc):
                raise
            return []  # the stats say the queue is out of reach
        return [
            f"{w.name}: {w.description}, {'painting' if w.job else 'idle'}, {w.jobs_done} done"
            for w in sorted(found, key=lambda w: w.name)
        ]

    # -- talking to redis --------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("CeleryExecutor.start() has not been called")
        return self._redis

    async def _submit_remote(self, job: Job) -> str:
        """Store ``job`` (idempotent) and make sure its Celery message went out; returns its state."""
        fields = encode_inputs(job, self._steps, self._timeout_s)
        args: list[Any] = [job.id, time.time(), self._job_ttl_s, fields.pop("meta"), fields.pop("content")]
        for name, data in fields.items():
            args += [name, data]
        async with self._submit_lock:
            status, state, sent = await self._submit_script(keys=self._keys.for_job(job.id), args=args)
            state = state.decode()
            if status == b"known" and state in TERMINAL:
                return state
            if sent != b"1":
                await self._send(job.id)
                # Not a plain HSET: a cancel while the message went out deleted the job, and
                # HSET would bring its hash back with no expiry.
                await self._mark_sent_script(keys=self._keys.for_job(job.id), args=[])
        return state

    async def _send(self, job_id: str) -> None:
        from nst_core.celery_app import send_job

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._send_pool, send_job, self._app, job_id)

    async def _cancel_remote(self, job_id: str) -> str:
        args = [job_id, time.time(), self._job_ttl_s, self._keys.worker_prefix]
        status = await self._cancel_script(keys=self._keys.for_job(job_id), args=args)
        return status.decode() if isinstance(status, bytes) else str(status)

    async def _refresh_workers(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._workers_at < 5:
            return
        client = self._client()
        names = [key async for key in client.scan_iter(match=f"{self._keys.worker_prefix}*", count=200)]
        infos: list[WorkerInfo] = []
        if names:
            for raw in await client.mget(names):
                if raw:
                    with contextlib.suppress(ValueError, TypeError):
                        infos.append(WorkerInfo.from_json(raw))
        before = self.hold
        self._workers = sorted(infos, key=lambda w: w.name)
        self._workers_at = time.monotonic()
        await self._recancel()
        if self.hold != before:
            self._log_hold()
            if self.hold is Hold.NO_WORKER:
                # A running job's worker is gone too: it waits for the next one to put it back
                # in line, rather than show a frozen "Painting…" meanwhile.
                for job_id in [j for j, w in self._watch.items() if w.state == "running"]:
                    await self._emit(JobQueued(job_id, 1, None, Hold.NO_WORKER))
            await self._announce_all()
        measured = [w for w in infos if w.step_per_pixel_s > 0 or w.step_fixed_s > 0]
        if measured:
            # A job goes to whichever worker is free: the average of their measured steps.
            cost = StepCost(
                sum(w.step_fixed_s for w in measured) / len(measured),
                sum(w.step_per_pixel_s for w in measured) / len(measured),
            )
            if cost != self._workers_cost:  # the workers changed
                self._workers_cost = cost
                self._durations.calibrate(cost)

    async def _recancel(self) -> None:
        """Cancel again the jobs still stopping: one whose worker died after the first ask is
        closed now (CANCEL does that once its heartbeat has lapsed), where nothing else would
        close it while no worker is left to reap it."""
        for job_id in list(self._cancelling):
            status = await self._cancel_remote(job_id)
            if status in ("cancelled", "unknown"):  # closed now, or its record is gone
                await self._finish(job_id, JobCancelled(job_id))
            elif status != "cancelling":
                self._cancelling.discard(job_id)  # done or failed first: its event is on its way

    def _log_hold(self) -> None:
        if self.hold is Hold.NO_WORKER:
            log.warning("no worker online: queued jobs wait until one starts (nst-worker)")
        else:
            log.info("workers online: %s", self.device)

    async def _load_durations(self) -> None:
        for raw in reversed(await self._client().lrange(self._keys.durations, 0, 19)):
            with contextlib.suppress(ValueError):
                self._durations.add(float(raw))

    # -- the event loop ----------------------------------------------------------------

    async def _run_forever(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                if not self._ready:
                    await self._setup()
                    delay = 0.1
                await self._read_once(">")
                if self._outbox:  # a submit hit a short outage that the loop itself never saw
                    await self._flush_outbox()
                    await self._announce_all()
                await self._refresh_workers()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _is_outage(exc):
                    if self._connected or self._ready or not self._outage:
                        log.warning("redis unreachable or refusing writes (%s); jobs are delayed, retrying", exc)
                        self._connected = False
                        self._ready = False
                        self._outage = True
                        await self._announce_delayed()
                elif isinstance(exc, ResponseError):
                    if "NOGROUP" in str(exc):  # redis lost its data: recreate the group
                        log.warning("event stream group missing (%s); recreating it", exc)
                        self._ready = False
                    else:
                        log.exception("redis refused a command")
                else:
                    log.exception("celery executor loop failed; retrying")
                    delay = max(delay, 1.0)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _setup(self) -> None:
        """(Re)connect: group, backlog, durations, outbox, fresh positions."""
        client = self._client()
        for stream in (self._keys.events, self._keys.progress):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
                await client.xgroup_create(stream, EVENT_GROUP, id="0", mkstream=True)
        if not self._watch:
            await self._adopt_unfinished()
        else:
            await self._report_lost()
        if not self._durations_loaded:
            await self._load_durations()
            self._durations_loaded = True
        # Entries a previous run of the bot read but never acknowledged: redeliver them.
        while await self._read_once("0"):
            pass
        await self._flush_outbox()
        for job_id in list(self._cancel_later):
            self._cancel_later.discard(job_id)
            with contextlib.suppress(*OUTAGE):
                await self.cancel(job_id)
        if self._outage:
            log.info("redis is back; jobs carry on")
            self._outage = False
        if self._workers:
            # Back after an outage that may have taken the workers' heartbeats with Redis's data:
            # the workers they knew get a beat to write them again before "no worker online".
            self._workers_at = time.monotonic() + WORKER_BEAT_GRACE_S
        else:
            await self._refresh_workers(force=True)
        self._connected = self._ready = True
        if self.hold is not None:
            self._log_hold()
        await self._announce_all(force=True)

    async def _adopt_unfinished(self) -> None:
        """After a bot restart: watch every job still queued or running, drop stale ids."""
        client = self._client()
        pending = [m.decode() for m in await client.zrange(self._keys.pending, 0, -1)]
        running = [k.decode() for k in await client.hkeys(self._keys.running)]
        for job_id in pending:
            if not await client.exists(self._keys.job(job_id)):
                await client.zrem(self._keys.pending, job_id)  # its record expired
                continue
            self._watch.setdefault(job_id, _Watched("queued"))
        for job_id in running:
            self._watch.setdefault(job_id, _Watched("running", 0))

    async def _report_lost(self) -> None:
        """Fail, as retryable, the watched jobs whose record is gone.

        Redis lost its data (it ran without its append-only file, was flushed, or
        evicted keys under ``maxmemory``): the job's inputs went with the record, so
        no worker can run it and none will report on it.  The caller still has the
        inputs and can submit the job again; without this its user would wait forever.
        """
        ids = [job_id for job_id in self._watch if job_id not in self._outbox and job_id not in self._submitting]
        if not ids:
            return
        pipe = self._client().pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(self._keys.job(job_id))
        for job_id, exists in zip(ids, await pipe.execute(), strict=True):
            if not exists and job_id in self._cancel_later:  # cancelled during the outage: nothing to redo
                self._cancel_later.discard(job_id)
                log.info("job %s: its record is gone from redis, and it was cancelled meanwhile", job_id)
                await self._finish(job_id, JobCancelled(job_id))
            elif not exists:
                log.warning("job %s: its record is gone from redis (data lost); reporting it", job_id)
                await self._finish(job_id, JobFailed(job_id, LOST_REASON, retryable=True))

    async def _flush_outbox(self) -> None:
        while self._outbox:
            job_id, job = next(iter(self._outbox.items()))
            await self._submit_remote(job)  # an outage here propagates: the loop backs off
            self._outbox.pop(job_id, None)

    async def _read_once(self, from_id: str, *, block: bool = True) -> int:
        """Read and handle one batch; ``from_id`` "0" re-reads this consumer's unacknowledged entries."""
        client = self._client()
        response = await client.xreadgroup(
            EVENT_GROUP, EVENT_CONSUMER, {self._keys.events: from_id, self._keys.progress: from_id}, count=100,
            block=self._block_ms if block and from_id != "0" else None,
        )  # fmt: skip
        batches = {(s.decode() if isinstance(s, bytes) else s): entries for s, entries in response or []}
        count = 0
        # Outcomes first: a progress report read in the same batch as its job's result is stale.
        for stream in (self._keys.events, self._keys.progress):
            for entry_id, fields in batches.get(stream, []):
                count += 1
                if not fields:  # deleted while pending
                    await client.xack(stream, EVENT_GROUP, entry_id)
                    continue
                await self._handle(entry_id, decode_event(fields), stream)
        return count

    async def _handle(self, entry_id: bytes, event: dict[str, str], stream: str) -> None:
        kind, job_id = event.get("type", ""), event.get("job", "")
        final = kind in TERMINAL
        if job_id in self._finished:
            pass  # a duplicate report of something already delivered
        elif kind == "queued":  # a lost worker's job went back to the queue
            self._watch[job_id] = _Watched("queued")
            await self._announce(job_id, force=True)
            await self._announce_all()  # at the front: the ones it went before moved back a place
        elif kind == "started":
            if self.hold is not None:  # a worker is back: say so now, not at the next look in 5 s
                await self._refresh_workers(force=True)
            known = job_id in self._watch
            watched = self._watch.setdefault(job_id, _Watched())
            if known and watched.state == "queued" and watched.position is None:
                # A worker took the job before anyone said where it stands (submit() was
                # still storing it): it was first in line.  Said now, so JobQueued comes first.
                watched.position, watched.eta_s = 1, self._eta(job_id, 1, 0)
                await self._emit(JobQueued(job_id, 1, watched.eta_s))
            watched.state, watched.position = "running", 0
            watched.eta_s = self._durations.predict(self._schedules.get(job_id))
            await self._emit(JobStarted(job_id, watched.eta_s))
            await self._announce_all()
        elif kind == "progress":
            watched = self._watch.get(job_id, _Watched("running"))
            if watched.state == "running":
                eta = float(event["eta"]) if event.get("eta") else None
                watched.eta_s = eta if eta is not None else watched.eta_s
                await self._emit(JobProgress(job_id, float(event.get("fraction", 0)), eta))
                if time.monotonic() - self._reestimated_at > REESTIMATE_S:  # the jobs behind it wait less
                    self._reestimated_at = time.monotonic()
                    await self._announce_all()
        elif kind == "done":
            data = await self._client().get(self._keys.result(job_id))
            if data is None:
                # Delivered (and cleaned up) by an earlier run of the bot, or expired.
                if await self._client().exists(self._keys.job(job_id)):
                    await self._finish(job_id, JobFailed(job_id, "the result expired before it could be sent"))
                else:
                    log.info("job %s: result already delivered; skipping a replayed event", job_id)
            else:
                seconds = float(event.get("seconds", 0))
                self._durations.add(seconds, self._schedules.get(job_id))
                done = JobDone(
                    job_id, data, seconds, int(event.get("width", 0)), int(event.get("height", 0)),
                    event.get("format", "JPEG"),
                )  # fmt: skip
                await self._finish(job_id, done)
        elif kind == "failed":
            await self._finish(job_id, JobFailed(job_id, event.get("reason", ""), event.get("retryable") == "1"))
        elif kind == "cancelled":
            await self._finish(job_id, JobCancelled(job_id))
        # Forget the job and acknowledge the entry in one transaction: after a crash either
        # both happened or the entry is read again.
        pipe = self._client().pipeline(transaction=True)
        if final:
            await self._forget_script(keys=self._keys.for_job(job_id), args=[job_id], client=pipe)
        pipe.xack(stream, EVENT_GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()
        if final:
            await self._announce_all()

    async def _finish(self, job_id: str, event: JobEvent) -> None:
        """Emit a job's final event once per executor, and stop watching it."""
        if job_id in self._finished:
            return
        self._cancelling.discard(job_id)
        self._watch.pop(job_id, None)
        self._schedules.pop(job_id, None)
        self._finished[job_id] = None
        while len(self._finished) > 10_000:
            self._finished.popitem(last=False)
        await self._report(event)

    # -- positions and ETAs ------------------------------------------------------------

    def _outbox_position(self, job_id: str) -> int:
        return self._last_length + list(self._outbox).index(job_id) + 1

    def _eta(self, job_id: str, position: int, running: int) -> float:
        return self._eta_for(self._schedules.get(job_id), position, running, job_id)

    def _eta_for(self, schedule: list[Scale] | None, position: int, running: int, job_id: str = "") -> float:
        """Seconds until a job at ``position`` is done: nothing to wait for while a worker is
        free; else what the running jobs have left and the jobs ahead need, spread over the
        live workers; then the job itself.  Each job of this bot's counts by its own size and
        progress (a large picture ahead is not a typical one); other bots' jobs as typical ones."""
        workers = max(1, len(self._workers))
        own = self._durations.predict(schedule)
        if position <= workers - running:
            return own
        typical = self._durations.typical
        left = [w.eta_s if w.eta_s is not None else typical for w in self._watch.values() if w.state == "running"]
        left += [0.5 * typical] * max(0, running - len(left))
        ahead = [
            self._durations.predict(self._schedules.get(other))
            for other, w in self._watch.items()
            if w.state == "queued" and other != job_id and w.position is not None and w.position < position
        ]
        ahead += [typical] * max(0, position - 1 - len(ahead))
        return (sum(left) + sum(ahead)) / workers + own

    async def _announce(self, job_id: str, *, force: bool = False) -> None:
        await self._announce_all(only=job_id, force=force)

    async def _announce_all(self, *, only: str | None = None, force: bool = False) -> None:
        """Tell queued jobs their (new) place in line; only changes unless ``force``."""
        queued = [j for j, w in self._watch.items() if w.state == "queued" and (only is None or j == only)]
        if not queued:
            return
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.hlen(self._keys.running)
            for job_id in queued:
                pipe.zrank(self._keys.pending, job_id)
            running, *ranks = await pipe.execute()
        except OUTAGE:
            return
        for job_id, rank in zip(queued, ranks, strict=True):
            watched = self._watch.get(job_id)
            if watched is None or watched.state != "queued":  # started (or finished) meanwhile
                continue
            if rank is None:
                if only is None or not force:
                    continue
                # Just put in line (submitted or requeued) and taken by a worker before
                # this ran: it was first in line, and its "started" event is on its way.
                rank = 0
            position = int(rank) + 1
            hold = self.hold
            told = watched.eta_s is not None or watched.hold is not None
            eta = None if hold else self._eta(job_id, position, int(running))
            # A new estimate is worth a message once it moved by a fifth: the wait counts down
            # as the running job reports its progress, not only when the line moves.
            moved = eta is not None and watched.eta_s is not None and abs(eta - watched.eta_s) > 0.2 * watched.eta_s
            if position == watched.position and hold == watched.hold and told and not moved and not force:
                continue
            watched.position, watched.hold, watched.eta_s = position, hold, eta
            await self._emit(JobQueued(job_id, position, eta, hold))

    async def _announce_delayed(self) -> None:
        for job_id, watched in list(self._watch.items()):
            position = watched.position if watched.position is not None else 1
            watched.eta_s, watched.hold = None, Hold.UNREACHABLE
            await self._emit(JobQueued(job_id, position, None, Hold.UNREACHABLE))
