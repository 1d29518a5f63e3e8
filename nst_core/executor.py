"""The executor contract: how the bot hands jobs to whatever runs them.

One small interface with two implementations, so handlers and tests never care
which one runs:

* ``LocalExecutor`` (here): one worker thread per process that keeps the model
  warm on the device and runs jobs one at a time.  The default.
* ``CeleryExecutor`` (``nst_core.celery_executor``): Redis broker, any number of
  ``nst-worker`` processes.  For when one machine is not enough.

Both report the same events, delivered on the caller's event loop through the
``on_event`` coroutine given to ``start``:
``JobQueued(position, eta, hold)`` · ``JobProgress(fraction, eta)`` ·
``JobDone(image bytes)`` · ``JobFailed(reason)`` · ``JobCancelled``.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import logging
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nst_core.images import ImageError
from nst_core.schedule import Scale, StepCost, blend_eta, plan_at, plan_for
from nst_core.settings import StyleSettings

if TYPE_CHECKING:
    from nst_core.runner import JobResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StyleRef:
    """One style of a job: a preset slug or the bytes of the user's own image."""

    preset: str | None = None
    image: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.image is None):
            raise ValueError("a style is either a preset slug or image bytes")


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, and nothing that needs the bot token."""

    id: str
    content: bytes = field(repr=False)
    styles: tuple[StyleRef, ...]
    settings: StyleSettings = field(default_factory=StyleSettings)
    output_format: str = "JPEG"


class Hold(enum.Enum):
    """Why the queue is not moving, where the executor knows: users are told so, not a made-up time."""

    #: This process is loading the model and timing its device: a few seconds.
    WARMING_UP = "warming up"
    #: No worker is online to take jobs: until one (re)starts.
    NO_WORKER = "no worker online"
    #: The queue itself (Redis) is unreachable or refuses writes: jobs are safe and carry on
    #: when it is back, but nothing about the line can be known meanwhile.
    UNREACHABLE = "queue unreachable"


@dataclass(frozen=True)
class JobQueued:
    """Waiting, at ``position``; sent again whenever the position or the ``hold`` changes.

    ``eta_s`` is the best guess of seconds until the result; ``None`` means the
    executor cannot tell right now: under a ``hold``, or, without one, when it
    cannot reach its queue (e.g. its broker is unreachable): the job is safe but
    delayed.
    """

    job_id: str
    position: int  # 1 = next to start
    eta_s: float | None = None
    hold: Hold | None = None


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    eta_s: float | None = None


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    fraction: float  # 0..1 of the work (cost-weighted, not step-counted)
    eta_s: float | None = None


@dataclass(frozen=True)
class JobDone:
    job_id: str
    image: bytes = field(repr=False)
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    format: str = "JPEG"


@dataclass(frozen=True)
class JobFailed:
    """``retryable``: the job did not fail on its own merits (say, the queue lost it),
    so submitting it again, with the same inputs, may well succeed."""

    job_id: str
    reason: str  # for the end user
    retryable: bool = False


def time_limit_reason(limit_s: float) -> str:
    """The ``JobFailed.reason`` of a job stopped by its time limit, wherever it ran."""
    return f"it took longer than the {limit_s:.0f} s limit"


def is_time_limit(reason: str) -> bool:
    """Whether a failure was the time limit: unlike other failures, a smaller or faster
    picture is then the way to succeed, which the user should be told."""
    return reason.startswith("it took longer than the ") and reason.endswith(" s limit")


@dataclass(frozen=True)
class JobCancelled:
    job_id: str


JobEvent = JobQueued | JobStarted | JobProgress | JobDone | JobFailed | JobCancelled
EventSink = Callable[[JobEvent], Awaitable[None]]


#: How long stop() waits for the caller to record outcomes it was handed (``Executor._reported``).
REPORT_WAIT_S = 30.0


class Executor(abc.ABC):
    """Runs jobs somewhere and reports on them.  All methods run on the caller's loop."""

    _on_event: EventSink | None = None

    def __init__(self) -> None:
        #: Jobs' outcomes on their way to the caller, which stop() lets arrive.
        self._reporting: set[asyncio.Future[None]] = set()

    async def _emit(self, event: JobEvent) -> None:
        if self._on_event is None:
            return
        try:
            await self._on_event(event)
        except Exception:  # a broken listener must not kill the executor
            log.exception("event handler failed for %s", type(event).__name__)

    async def _report(self, outcome: JobEvent) -> None:
        """Hand a job's outcome over out of stop()'s reach.

        The caller records an outcome in several awaits (its database, then the user's
        status message).  Cut short half-way by a stop, a cancel was written down while
        its status message kept reading "Cancelling…" for good.
        """
        report = asyncio.ensure_future(self._emit(outcome))
        self._reporting.add(report)
        report.add_done_callback(self._reporting.discard)
        await asyncio.shield(report)

    async def _reported(self) -> None:
        """Wait for the outcomes being handed over: stop() calls it once its loop has ended.

        Bounded: a caller stuck recording one (a hung volume) must not keep the process from
        stopping; the job is then painted again at the next start.
        """
        if self._reporting:
            _, stuck = await asyncio.wait(set(self._reporting), timeout=REPORT_WAIT_S)
            if stuck:
                log.warning("stopping while %d job outcome(s) are still being recorded", len(stuck))

    @abc.abstractmethod
    async def start(self, on_event: EventSink) -> None:
        """Begin running jobs; every later event goes to ``on_event``."""

    @abc.abstractmethod
    async def submit(self, job: Job) -> None:
        """Queue ``job``; a ``JobQueued`` event follows.  Resubmitting a known id is a no-op."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; True if it was known and not finished."""

    @abc.abstractmethod
    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Stop taking work.  Queued jobs are not lost: the caller keeps them in its database.

        A job running here that should finish within ``grace_s`` is let finish, and its
        outcome reported, rather than interrupted and painted all over again at the next
        start.  (Remote workers finish their jobs whatever the caller does.)
        """

    @abc.abstractmethod
    async def queue_length(self) -> int:
        """Jobs waiting or running."""

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Human-readable description of where jobs run."""

    def max_size(self) -> int | None:
        """The largest output (long side, px) this executor's device can paint.

        None where it is not known here: remote workers each refuse, with a
        clear message, a size their own memory cannot hold.
        """
        return None

    @property
    def hold(self) -> Hold | None:
        """What keeps queued jobs from moving right now, if anything; estimates meanwhile are guesses.

        When it ends, queued jobs hear their place and estimate again.
        """
        return None

    async def painters(self) -> list[str]:
        """A line per painter for the operator (``/stats``); none where ``device`` says it all."""
        return []

    async def position(self, job_id: str) -> int | None:
        """1-based place in the queue (0 = running), None if unknown."""
        return None

    async def eta(self, job_id: str) -> float | None:
        """Best guess of seconds until the job's result, None if this executor cannot tell."""
        return None

    def picture_seconds(self, size: tuple[int, int], settings: StyleSettings) -> float | None:
        """Seconds one picture of ``size`` (pixels, as sent) takes here, queue aside.

        None until this executor has timed its device (a warm-up, a worker's report,
        or finished jobs): what a user weighs a setting by should not be a made-up number.
        """
        return None

    async def estimate(self, job: Job) -> float | None:
        """Seconds until ``job``'s result if it were submitted now; None if this executor cannot tell.

        For the first status message, which goes out before the job is handed over.
        """
        return None


class DurationModel:
    """Guesses how long a job takes, for queue ETAs.

    A job's schedule says how much work it is (its steps at each scale's pixels);
    a ``StepCost`` turns that into seconds: measured by the warm-up where jobs run
    in this process, otherwise a nominal unit.  Finished jobs then correct the
    scale by the median of actual / predicted, which also covers what the steps
    leave out (decoding, the styles' Gram matrices, encoding) and a host busier
    than at the warm-up.  A job whose schedule is unknown gets the median of recent
    jobs, and before any of that, ``default_s``.
    """

    def __init__(self, default_s: float = 30.0) -> None:
        self._default = default_s
        self._cost: StepCost | None = None
        self._ratios: collections.deque[float] = collections.deque(maxlen=20)
        self._recent: collections.deque[float] = collections.deque(maxlen=20)

    @property
    def cost(self) -> StepCost | None:
        """The measured step cost in use, if any."""
        return self._cost

    def calibrate(self, cost: StepCost) -> None:
        """Use a measured cost from now on (a warm-up's, or the workers' latest).

        The corrections stay: each is how far a job ran from what was predicted for it,
        a property of the prediction (what the steps leave out) more than of the device,
        so it carries over when a worker restarts or a faster one joins.  Not those
        taken against the nominal unit, though: they convert units, not a prediction.
        """
        if self._cost is None:
            self._ratios.clear()
        self._cost = cost

    def add(self, seconds: float, schedule: Sequence[Scale] | None = None) -> None:
        self._recent.append(seconds)
        raw = (self._cost or StepCost()).seconds(schedule) if schedule else 0.0
        if raw > 0:
            self._ratios.append(seconds / raw)

    def informed(self, schedule: Sequence[Scale] | None) -> bool:
        """Whether ``predict`` knows this job's size in this device's seconds, rather than guessing."""
        return bool(schedule) and (self._cost is not None or bool(self._ratios))

    def informed_seconds(self, schedule: Sequence[Scale] | None) -> float | None:
        """``predict``, where it rests on this device's timing rather than a guess."""
        return self.predict(schedule) if self.informed(schedule) else None

    def picture_seconds(
        self, size: tuple[int, int], settings: StyleSettings, default_long_side: int, steps: Sequence[int] | None
    ) -> float | None:
        """``informed_seconds`` for a photo of ``size``; None for one too long and thin to paint,
        which is refused elsewhere with its own message."""
        try:
            return self.informed_seconds(plan_at(size, settings, default_long_side, steps))
        except ImageError:
            return None

    def predict(self, schedule: Sequence[Scale] | None = None) -> float:
        if schedule:
            raw = (self._cost or StepCost()).seconds(schedule)
            if self._ratios:
                return raw * statistics.median_high(self._ratios)
            if self._cost is not None:
                return raw
        return self.typical

    @property
    def typical(self) -> float:
        return statistics.median_high(self._recent) if self._recent else self._default


class LocalExecutor(Executor):
    """Runs jobs one at a time on a worker thread that keeps the model warm.

    Torch releases the GIL inside its kernels, so the bot's event loop stays
    responsive while a job runs; the loop itself never touches torch.
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        timeout_s: float | None = None,
        steps: tuple[int, ...] | None = None,
        threads: int | None = None,
    ):
        """``threads`` caps torch's CPU threads: on a machine shared with other busy
        processes, fewer threads avoid oversubscription (spinning OpenMP threads)."""
        super().__init__()
        self._device_arg = device
        self._steps = steps
        self._threads = threads
        self._timeout_s = timeout_s
        self._pending: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._running: tuple[Job, threading.Event] | None = None
        self._running_eta: float | None = None
        self._running_since = 0.0
        #: Each known job's schedule (None: unreadable photo), for its ETA.
        self._schedules: dict[str, list[Scale] | None] = {}
        #: The engine's default long side, used by jobs that do not set one; the warm-up
        #: asks the device, and until then this guess stands in.
        self._default_size = 512
        self._wakeup = asyncio.Event()
        #: Set when the warm-up is over (or has failed): jobs wait for it in the queue, so
        #: that none starts "painting" with an estimate made before the step was timed.
        self._warm = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nst-worker")
        self._task: asyncio.Task | None = None
        self._on_event: EventSink | None = None
        self._durations = DurationModel()
        self._resolved_device: str | None = None
        self._stopping = False

    @property
    def device(self) -> str:
        from nst_core.device import describe_device, pick_device

        if self._resolved_device is None:
            self._resolved_device = pick_device(self._device_arg)
        return describe_device(self._resolved_device, self._threads)

    def max_size(self) -> int | None:
        from nst_core.device import max_size, pick_device

        return max_size(pick_device(self._device_arg))

    @property
    def hold(self) -> Hold | None:
        return None if self._warm.is_set() else Hold.WARMING_UP

    async def start(self, on_event: EventSink) -> None:
        from nst_core.device import pick_device

        self._on_event = on_event
        self._resolved_device = pick_device(self._device_arg)
        # The worker thread's first task, so the first job finds the model warm, as every later one does.
        self._pool.submit(self._warm_up, self._resolved_device, asyncio.get_running_loop())
        self._task = asyncio.create_task(self._run_forever(), name="local-executor")

    def _warm_up(self, device: str, loop: asyncio.AbstractEventLoop) -> None:
        """The worker thread's first task; torch's thread count is process-wide, so set once here.

        It also times a step, so that the very first job's ETA is this device's, not a guess.
        """
        try:
            import torch

            from nst_core.device import default_size
            from nst_core.runner import step_cost, warm_up

            if self._threads:
                torch.set_num_threads(self._threads)
            log.info("VGG19 warm on %s in %.1f s", device, warm_up(device))
            self._default_size = default_size(device)
            cost = step_cost(device)
            log.info("a step on %s: %.0f ms + %.2f µs per pixel", device, cost.fixed_s * 1e3, cost.per_pixel_s * 1e6)
            loop.call_soon_threadsafe(self._durations.calibrate, cost)
        except Exception as exc:  # the first job will meet the same problem and report it to its user
            log.warning("could not warm VGG19 up on %s: %s", device, exc)
        finally:
            loop.call_soon_threadsafe(self._warm.set)

    async def stop(self, *, grace_s: float = 0.0) -> None:
        self._stopping = True  # the loop starts no further job
        if grace_s > 0 and self._running is not None and self._task is not None and self._running_left() <= grace_s:
            job_id = self._running[0].id
            log.info("letting job %s finish (about %.0f s left) before stopping", job_id, self._running_left())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        if self._running is not None:
            self._running[1].set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reported()
        # Waits for the running step to notice the cancel: off the loop, which still has
        # Telegram calls to finish.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def submit(self, job: Job) -> None:
        if job.id in self._pending or (self._running and self._running[0].id == job.id):
            return
        self._pending[job.id] = job
        self._schedules[job.id] = plan_for(job.content, job.settings, self._default_size, self._steps)
        self._wakeup.set()
        await self._emit(self._queued(job.id))

    async def cancel(self, job_id: str) -> bool:
        if self._pending.pop(job_id, None) is not None:
            self._schedules.pop(job_id, None)
            await self._emit(JobCancelled(job_id))
            await self._announce_positions()
            return True
        if self._running is not None and self._running[0].id == job_id:
            self._running[1].set()  # the worker thread stops at its next step
            return True
        return False

    async def queue_length(self) -> int:
        return len(self._pending) + (1 if self._running else 0)

    async def position(self, job_id: str) -> int | None:
        if self._running is not None and self._running[0].id == job_id:
            return 0
        return self._position_of(job_id) if job_id in self._pending else None

    async def eta(self, job_id: str) -> float | None:
        if self._running is not None and self._running[0].id == job_id:
            return self._running_left()
        return self._eta_of(job_id) if job_id in self._pending else None

    def _position_of(self, job_id: str) -> int:
        return list(self._pending).index(job_id) + 1

    async def estimate(self, job: Job) -> float | None:
        pending = sum(self._predict(queued) for queued in self._pending)
        own = self._durations.predict(plan_for(job.content, job.settings, self._default_size, self._steps))
        return self._running_left() + pending + own

    def picture_seconds(self, size: tuple[int, int], settings: StyleSettings) -> float | None:
        return self._durations.picture_seconds(size, settings, self._default_size, self._steps)

    def _predict(self, job_id: str) -> float:
        return self._durations.predict(self._schedules.get(job_id))

    def _informed_prediction(self, job_id: str) -> float | None:
        return self._durations.informed_seconds(self._schedules.get(job_id))

    def _running_left(self) -> float:
        """The running job's own ETA once its progress gives one; until then the prediction, less the time spent."""
        if self._running is None:
            return 0.0
        if self._running_eta is not None:
            return self._running_eta
        predicted = self._predict(self._running[0].id)
        return max(predicted - (time.monotonic() - self._running_since), 0.1 * predicted)

    def _eta_of(self, job_id: str) -> float:
        """The running job's rest, then every queued job up to and including this one, each by its own size."""
        total = self._running_left()
        for queued in self._pending:
            total += self._predict(queued)
            if queued == job_id:
                break
        return total

    def _queued(self, job_id: str) -> JobQueued:
        """The job's place; its estimate only once the warm-up has timed this device."""
        if (hold := self.hold) is not None:
            return JobQueued(job_id, self._position_of(job_id), None, hold)
        return JobQueued(job_id, self._position_of(job_id), self._eta_of(job_id))

    async def _announce_positions(self) -> None:
        for job_id in list(self._pending):
            await self._emit(self._queued(job_id))

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        await self._warm.wait()
        await self._announce_positions()  # the queue's first estimates in this machine's seconds
        while not self._stopping:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            _, job = self._pending.popitem(last=False)
            cancel = threading.Event()
            self._running = (job, cancel)
            self._running_eta = None
            self._running_since = time.monotonic()
            await self._emit(JobStarted(job.id, self._predict(job.id)))
            await self._announce_positions()
            try:
                outcome = await self._run_one(loop, job, cancel, self._informed_prediction(job.id))
            finally:
                self._running = None
                self._schedules.pop(job.id, None)
            # Reported once it no longer runs here: a cancel that comes while the caller records a
            # result must hear that the job is over, not be told "stopping…" and see it delivered.
            await self._report(outcome)

    async def _run_one(
        self, loop: asyncio.AbstractEventLoop, job: Job, cancel: threading.Event, predicted_s: float | None
    ) -> JobEvent:
        last_sent = 0.0

        def on_progress(fraction: float, eta_s: float | None) -> None:
            nonlocal last_sent
            eta_s = blend_eta(predicted_s, time.monotonic() - self._running_since, fraction, eta_s)
            self._running_eta = eta_s
            now = time.monotonic()
            if now - last_sent < 0.5 and fraction < 1.0:
                return
            last_sent = now
            asyncio.run_coroutine_threadsafe(self._emit(JobProgress(job.id, fraction, eta_s)), loop)

        def work() -> JobResult | JobEvent:
            # Everything that imports torch happens here, on the worker thread: imported on the
            # event loop, torch and torchvision froze the whole bot for ~2 s at its first job.
            from nst_core.runner import JobCancelledError, run_job, user_message

            try:
                return run_job(
                    job, device=self._resolved_device, progress=on_progress, cancel=cancel, steps=self._steps
                )
            except JobCancelledError:
                return JobCancelled(job.id)
            except Exception as exc:
                log.warning("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, ValueError))
                return JobFailed(job.id, user_message(exc))

        future = loop.run_in_executor(self._pool, work)
        # A job interrupted by stop() or a timeout still ends after nobody waits for it any more;
        # reading its outcome here keeps asyncio from reporting an exception as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            if self._timeout_s:
                result = await asyncio.wait_for(asyncio.shield(future), self._timeout_s)
            else:
                result = await future
        except TimeoutError:
            cancel.set()
            with contextlib.suppress(Exception):
                await future
            return JobFailed(job.id, time_limit_reason(self._timeout_s))
        except Exception:  # the engine could not even be loaded
            log.exception("job %s could not run", job.id)
            return JobFailed(job.id, "something went wrong in the painter")
        if isinstance(result, JobCancelled | JobFailed):
            return result
        # The job's own time: the first one may have waited for the warm-up as well.
        self._durations.add(result.seconds, self._schedules.get(job.id))
        return JobDone(job.id, result.image, result.seconds, result.width, result.height, result.format)
