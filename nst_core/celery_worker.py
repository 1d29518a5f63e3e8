"""``nst-worker``: a Celery worker that runs stylization jobs on one device.

One worker per GPU (or one per CPU machine).  Each worker:

* loads VGG19 once at start and keeps it warm for every job (a solo pool: the
  job runs in the worker's own process, so there is one model and no fork);
* takes one job at a time (concurrency 1, prefetch 1, late acknowledgement), so
  a busy worker never sits on a job another worker could start;
* writes a heartbeat key with its device every few seconds, which the bot shows
  and the other workers watch: a job whose worker falls silent for longer than
  the heartbeat TTL is put back in the queue by whichever worker notices first
  (a job left by an earlier process under the same name, by the new process at
  once), and a job that has cost ``MAX_ATTEMPTS`` workers is failed instead;
* polls the job's cancel flag between optimisation steps, so a cancel stops a
  running job within a few steps.

``nst-worker --check`` verifies the device, the weights and the Redis
connection, prints one line and exits 0 or 1 (Docker health checks, deploy
scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from nst_core import presets
from nst_core.celery_store import (
    CLAIM,
    DEFAULT_JOB_TTL_S,
    FINISH,
    MARK_SENT,
    MAX_ATTEMPTS,
    PROGRESS,
    REQUEUE,
    RESEND,
    Keys,
    WorkerInfo,
    check_redis_url,
    decode_inputs,
    parse_steps,
    redis_url,
    refuses_writes,
)
from nst_core.executor import DurationModel, time_limit_reason
from nst_core.schedule import StepCost, blend_eta, plan_for

log = logging.getLogger("nst_core.worker")
T = TypeVar("T")

#: Connection problems worth waiting out (Redis restarting) rather than failing a job for.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OSError)


def _waits_out(exc: BaseException) -> bool:
    """Redis is unreachable or refuses writes for now: retry or skip, never fail the job for it."""
    return isinstance(exc, TRANSIENT) or refuses_writes(exc)


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass
class WorkerConfig:
    """Everything ``nst-worker`` is told by flags and environment."""

    redis_url: str
    device: str = "auto"
    name: str = ""
    threads: int | None = None
    steps: tuple[int, ...] | None = None
    heartbeat_ttl_s: float = 15.0
    job_ttl_s: int = DEFAULT_JOB_TTL_S
    prefix: str = "nst"
    loglevel: str = "INFO"

    @classmethod
    def from_env(cls, **overrides: Any) -> WorkerConfig:
        """The configuration from flags (``overrides``) and environment; ValueError names a bad variable."""
        env = os.environ
        values: dict[str, Any] = {
            "redis_url": redis_url(),
            "device": env.get("NST_DEVICE", "auto"),
            "name": env.get("NST_WORKER_NAME", ""),
            "threads": _env_number(int, "NST_TORCH_THREADS", None),
            "steps": parse_steps(env.get("NST_STEPS")),
            "heartbeat_ttl_s": _env_number(float, "NST_HEARTBEAT_TTL", 15.0),
            "job_ttl_s": _env_number(int, "NST_JOB_TTL", DEFAULT_JOB_TTL_S),
            # NST_LOG_LEVEL as for the bot; NST_LOGLEVEL is what earlier versions read.
            "loglevel": env.get("NST_LOG_LEVEL") or env.get("NST_LOGLEVEL") or "INFO",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        try:
            check_redis_url(config.redis_url)
        except ValueError as exc:
            raise ValueError(f"REDIS_URL {exc}") from None
        if config.loglevel.upper() not in logging.getLevelNamesMapping():
            raise ValueError("NST_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return config


def _env_number(kind: Callable[[str], T], name: str, default: T) -> T:
    """A positive number from the environment (empty: ``default``), or ValueError naming it."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value > 0:  # type: ignore[operator]
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what} above 0, not {text!r}")
    return value


@dataclass
class WorkerRuntime:
    """The state one worker process keeps between jobs: device, Redis, heartbeat, reaper."""

    config: WorkerConfig
    device: str
    description: str
    #: Sends a job id's message (``again``: a requeued job, which goes first); set once the Celery app exists.
    send_task: Callable[[str, bool], None] | None = None
    keys: Keys = field(init=False)
    redis: redis.Redis = field(init=False)
    current_job: str | None = field(default=None, init=False)
    #: time.monotonic() since which this worker has had no job (None while it paints).
    idle_since: float | None = field(default_factory=time.monotonic, init=False)
    jobs_done: int = field(default=0, init=False)
    started: float = field(default_factory=time.time, init=False)
    #: This process, as opposed to an earlier one under the same name: in a container
    #: (``init: true``) a restarted worker gets the same PID and hostname, hence the same
    #: default name.  CLAIM stores it with the job, so the reaper can tell the jobs this
    #: process runs from those its killed predecessor left behind.
    boot: str = field(default_factory=lambda: uuid.uuid4().hex, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _silent_since: dict[tuple[str, str], float] = field(default_factory=dict, init=False)
    gpu_claim: str | None = None  # the P:gpu:{uuid} key this worker holds (``cuda:free``)
    #: This worker's own estimate of its jobs (calibrated at boot, corrected by each job
    #: it finishes); it steadies the time left that its progress reports carry.
    durations: DurationModel = field(default_factory=DurationModel, init=False)
    default_size: int = field(default=512, init=False)  # the device's; set at boot

    def __post_init__(self) -> None:
        self.keys = Keys(self.config.prefix)
        self.redis = redis.Redis.from_url(
            self.config.redis_url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=15
        )
        self._claim = self.redis.register_script(CLAIM)
        self._progress = self.redis.register_script(PROGRESS)
        self._finish = self.redis.register_script(FINISH)
        self._requeue = self.redis.register_script(REQUEUE)
        self._resend = self.redis.register_script(RESEND)
        self._mark_sent = self.redis.register_script(MARK_SENT)

    @property
    def name(self) -> str:
        return self.config.name

    # -- heartbeat and reaper ---------------------------------------------------------

    def info(self) -> WorkerInfo:
        cost = self.durations.cost or StepCost(0.0, 0.0)  # zeros: not measured
        return WorkerInfo(
            name=self.name, device=self.device, description=self.description, host=socket.gethostname(),
            pid=os.getpid(), started=self.started, job=self.current_job, jobs_done=self.jobs_done,
            step_fixed_s=cost.fixed_s, step_per_pixel_s=cost.per_pixel_s,
        )  # fmt: skip

    def beat(self) -> None:
        ttl_ms = max(1000, int(self.config.heartbeat_ttl_s * 1000))
        self.redis.set(self.keys.worker(self.name), self.info().to_json(), px=ttl_ms)
        if self.gpu_claim is not None:
            self.redis.set(self.gpu_claim, self.name, px=ttl_ms)

    def reap(self) -> list[str]:
        """Requeue jobs whose worker is gone; returns their ids.

        Another worker is only given up on after this reaper has seen its
        heartbeat missing for the full TTL, so a Redis restart (which can drop
        every heartbeat at once) does not make live workers' jobs run twice.
        A job held under this worker's own name but claimed by an earlier
        process (see ``boot``) is requeued at once: that process is dead, and
        the heartbeat under the shared name, this process's own, says nothing
        about it.  A job that has used up its attempts is failed instead.
        """
        now = time.time()
        requeued: list[str] = []
        running = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.keys.running).items()}
        seen: set[tuple[str, str]] = set()
        for job_id, owner in running.items():
            args: list[Any] = [job_id, owner, self.keys.worker_prefix, now]
            if owner == self.name:
                if job_id == self.current_job:
                    continue
                args.append(self.boot)  # the script compares it with the claim's
                lost = f"an earlier run of {owner}"
            else:
                if self.redis.exists(self.keys.worker(owner)):
                    continue
                pair = (job_id, owner)
                seen.add(pair)
                first = self._silent_since.setdefault(pair, now)
                if now - first < self.config.heartbeat_ttl_s:
                    continue
                lost = f"worker {owner}"
            outcome = self._requeue(keys=self.keys.for_job(job_id), args=args)
            if outcome == 2:
                log.warning("%s was lost while running job %s, its last attempt: job failed", lost, job_id)
            elif outcome == 3:
                log.info("%s was lost while running job %s, which had been cancelled: job closed", lost, job_id)
            elif outcome:
                log.warning("%s was lost while running job %s: job requeued", lost, job_id)
                requeued.append(job_id)
                if self.send_task is not None:
                    self.send_task(job_id, True)
                    self.mark_sent(job_id)
        self._silent_since = {p: t for p, t in self._silent_since.items() if p in seen}
        return requeued

    def mark_sent(self, job_id: str) -> None:
        """Note that the job's Celery message went out, unless a cancel deleted the job meanwhile."""
        self._mark_sent(keys=self.keys.for_job(job_id), args=[])

    def resend_unsent(self, older_than_s: float | None = None) -> list[str]:
        """Send the Celery message of queued jobs that have none (returns their ids).

        A job is stored first and its message sent second; a bot (or reaper) that
        died in between, or a Redis restart at that moment, leaves a job that no
        worker would ever receive.  And a message can be lost after it was sent:
        Celery's Redis transport drops one it took on a connection that a Redis
        restart replaced, and the job then waited in line for good.  A worker idle
        all that while would have received it, so it sends such a job's message
        again.  A second message for a job is harmless: the claim script lets only
        one run happen.
        """
        if self.send_task is None:
            return []
        older_than_s = older_than_s if older_than_s is not None else 2 * self.config.heartbeat_ttl_s
        ids = [m.decode() for m in self.redis.zrange(self.keys.pending, 0, 99)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.keys.job(job_id), "sent", "submitted", "requeued")
        now = time.time()
        idle = self.idle_since is not None and time.monotonic() - self.idle_since >= older_than_s
        resent: list[str] = []
        for job_id, (sent, submitted, requeued) in zip(ids, pipe.execute(), strict=True):
            waited = now - max(float(submitted or 0), float(requeued or 0))
            if sent == b"0":
                if waited < older_than_s:
                    continue
                log.warning("job %s was queued without a message; sending it", job_id)
                self.send_task(job_id, requeued is not None)
                self.mark_sent(job_id)
            elif sent == b"1" and idle and self._resend(keys=[self.keys.job(job_id)], args=[now, older_than_s]):
                log.warning(
                    "job %s has waited %.0f s while this worker was idle: its message was lost; sending it again",
                    job_id,
                    waited,
                )
                self.send_task(job_id, True)  # overdue: ahead of the new ones
            else:
                continue
            resent.append(job_id)
        return resent

    def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.config.heartbeat_ttl_s / 3)
        while not self._stop.is_set():
            try:
                self.beat()
                self.reap()
                self.resend_unsent()
            except TRANSIENT as exc:
                log.warning("heartbeat: redis unreachable (%s); retrying", exc)
            except Exception as exc:
                if refuses_writes(exc):
                    log.warning("heartbeat: redis refuses writes (%s); retrying", exc)
                else:
                    log.exception("heartbeat failed")
            self._stop.wait(interval)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat_loop, name="nst-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stop beating and remove the key, so the bot sees this worker leave at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.redis.delete(self.keys.worker(self.name))
            if self.gpu_claim is not None and self.redis.get(self.gpu_claim) == self.name.encode():
                self.redis.delete(self.gpu_claim)

    # -- running one job -------------------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` until Redis answers and takes writes: a claim or an outcome must not be lost."""
        delay = 0.1
        while True:
            try:
                return fn()
            except Exception as exc:
                if isinstance(exc, TRANSIENT):
                    problem = "redis unreachable"
                elif refuses_writes(exc):
                    problem = "redis refuses writes"
                else:
                    raise
                log.warning("%s: %s (%s); retrying in %.1f s", what, problem, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self, job_id: str) -> str:
        """The body of the Celery task: claim, stylize, report.  Returns what happened."""
        from nst_core.runner import JobCancelledError, run_job, user_message

        keys = self.keys.for_job(job_id)
        outcome = self._retrying(
            f"claim {job_id}",
            lambda: self._claim(keys=keys, args=[job_id, self.name, time.time(), self.keys.worker_prefix, self.boot]),
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if outcome == "gave-up":
            log.warning("job %s: its workers were lost %d times; job failed", job_id, MAX_ATTEMPTS)
            return outcome
        if outcome != "run":
            log.info("job %s: not running it (%s)", job_id, outcome)
            return outcome
        self.current_job, self.idle_since = job_id, None
        try:
            self.beat()
        except Exception as exc:  # the heartbeat thread beats again soon
            if not _waits_out(exc):
                raise
        finish: list[Any]
        deadline: float | None = None
        timeout_s: float | None = None
        try:
            fields = self._retrying(f"inputs of {job_id}", lambda: self.redis.hgetall(self.keys.inputs(job_id)))
            if not fields:
                raise _InputsGone()
            job, steps, timeout_s = decode_inputs(job_id, fields)
            deadline = time.monotonic() + timeout_s if timeout_s else None
            schedule = plan_for(job.content, job.settings, self.default_size, steps or self.config.steps)
            predicted = self.durations.predict(schedule) if self.durations.informed(schedule) else None
            result = run_job(
                job,
                device=self.device,
                progress=self._progress_reporter(job_id, predicted),
                cancel=self._cancel_check(job_id, deadline),
                steps=steps or self.config.steps,
            )
        except JobCancelledError:
            if deadline is not None and time.monotonic() >= deadline:
                finish = ["failed", time_limit_reason(timeout_s), "0"]
            else:
                finish = ["cancelled"]
        except _InputsGone:
            finish = ["failed", "the photo expired before a painter was free; please send it again", "0"]
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, exc, exc_info=not isinstance(exc, ValueError))
            finish = ["failed", user_message(exc), "0"]
        else:
            finish = ["done", result.image, f"{result.seconds:.4f}", result.width, result.height, result.format]
            self.durations.add(result.seconds, schedule)
        finally:
            self.current_job, self.idle_since = None, time.monotonic()
        kind = finish[0]
        stored = self._retrying(
            f"outcome of {job_id}",
            lambda: self._finish(keys=keys, args=[job_id, self.name, time.time(), self.config.job_ttl_s, *finish]),
        )
        if stored == 0:
            log.info("job %s: %s, but another run already reported it; dropping this copy", job_id, kind)
            return "duplicate"
        if stored == 3:  # not "another run reported it", which nobody may have
            log.info(
                "job %s: %s, but the queue has no record of it any more (reported and cleaned up, cancelled, "
                "or lost with Redis's data, when the bot puts it back in line); dropping this copy",
                job_id,
                kind,
            )
            return "duplicate"
        if stored == 2:
            kind = "cancelled"
        self.jobs_done += 1
        log.info("job %s: %s", job_id, kind)
        return kind

    def _progress_reporter(
        self, job_id: str, predicted_s: float | None = None
    ) -> Callable[[float, float | None], None]:
        last = 0.0
        started = time.monotonic()

        def report(fraction: float, eta_s: float | None) -> None:
            nonlocal last
            now = time.monotonic()
            eta_s = blend_eta(predicted_s, now - started, fraction, eta_s)
            if now - last < 0.5 and fraction < 1.0:
                return
            last = now
            eta = "" if eta_s is None else f"{eta_s:.2f}"
            try:  # progress is best effort: a report Redis cannot take must not fail the painting
                self._progress(keys=self.keys.for_job(job_id), args=[job_id, time.time(), f"{fraction:.4f}", eta])
            except Exception as exc:
                if not _waits_out(exc):
                    raise

        return report

    def _cancel_check(self, job_id: str, deadline: float | None = None) -> Callable[[], bool]:
        """Polls the cancel flag at most every 0.2 s (a few steps on a GPU, one on a CPU); stops at ``deadline``."""
        key = self.keys.cancel(job_id)
        last = 0.0
        cancelled = False

        def check() -> bool:
            nonlocal last, cancelled
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            if cancelled or now - last < 0.2:
                return cancelled
            last = now
            with contextlib.suppress(*TRANSIENT):
                cancelled = bool(self.redis.exists(key))
            return cancelled

        return check


class _InputsGone(Exception):
    """The job's input key expired (or was never written) before a worker got to it."""


# ---------------------------------------------------------------------------
# Start-up


def _resolve_device(requested: str) -> tuple[str, str]:
    from nst_core.device import describe_device, pick_device

    device = pick_device("cuda" if requested == FREE_GPU else requested)
    return device, describe_device(device)


#: ``--device cuda:free``: take a visible GPU no other worker holds.  Compose gives every
#: replica of a scaled service the same GPU reservation, so with ``count: all`` and this,
#: ``docker compose up --scale worker=N`` spreads N workers over N GPUs.
FREE_GPU = "cuda:free"


def claim_free_gpu(client: redis.Redis, keys: Keys, name: str, ttl_s: float) -> tuple[str, str]:
    """The first visible GPU whose claim key (by GPU UUID, so unique across machines) is free.

    Returns the torch device and the claim key, which the heartbeat then keeps
    alive; a dead worker's claim expires with its heartbeat.
    """
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(f"device {FREE_GPU!r} needs a CUDA GPU and none is visible")
    ttl_ms = max(1000, int(ttl_s * 1000))
    for index in range(count):
        gpu_id = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or f"{socket.gethostname()}-{index}")
        key = keys.gpu(gpu_id)
        if client.set(key, name, nx=True, px=ttl_ms):
            return f"cuda:{index}", key
        # Held under this very name: a previous run of this worker (a restarted container
        # keeps its PID and host), whose claim has not expired yet.  It is ours again.
        if client.get(key) == name.encode():
            client.set(key, name, px=ttl_ms)
            return f"cuda:{index}", key
    raise ValueError(f"all {count} visible GPU(s) already have a worker; start fewer, or share one with --device cuda")


def check(config: WorkerConfig) -> int:
    """``--check``: device, weights, Redis; one line on stdout, exit status 0 or 1."""
    try:
        device, description = _resolve_device(config.device)
    except Exception as exc:
        print(f"nst-worker check FAILED: device: {exc}")
        return 1
    try:
        from nst_core.device import default_size
        from nst_core.runner import measure_step_cost, warm_up
        from nst_core.schedule import plan_at
        from nst_core.settings import StyleSettings

        seconds = warm_up(device)
        # What a machine being added will be like to its users: a default picture (3:2 photo).
        side = default_size(device)
        picture = measure_step_cost(device).seconds(plan_at((3, 2), StyleSettings(), side))
    except Exception as exc:
        print(f"nst-worker check FAILED: VGG19 weights on {description}: {exc}")
        return 1
    url = safe_url(config.redis_url)
    try:
        client = redis.Redis.from_url(config.redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        print(f"nst-worker check FAILED: redis at {url}: {exc}")
        return 1
    print(
        f"nst-worker check ok: device {description}, VGG19 weights loaded in {seconds:.1f} s, "
        f"a default picture ({side} px, balanced) in about {picture:.0f} s, redis at {url} answers"
    )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nst-worker",
        description="Run style-transfer jobs from the Redis queue on one device (a Celery worker).",
    )
    parser.add_argument("--check", action="store_true", help="verify device, weights and Redis, then exit 0/1")
    parser.add_argument(
        "--device",
        help="cpu, cuda, cuda:N, cuda:free (a GPU no other worker holds), mps or auto (default: $NST_DEVICE or auto)",
    )
    parser.add_argument("--redis-url", help="default: $REDIS_URL or redis://127.0.0.1:6379/0")
    parser.add_argument("--name", help="worker name (default: nst-<device>-<pid>@<host>)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: $NST_TORCH_THREADS or torch's)")
    parser.add_argument("--steps", help="override the step schedule, e.g. 3 (smoke tests)")
    parser.add_argument("--loglevel", help="DEBUG, INFO, WARNING (default: INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = WorkerConfig.from_env(
            device=args.device, redis_url=args.redis_url, name=args.name, threads=args.threads,
            steps=parse_steps(args.steps) if args.steps else None, loglevel=args.loglevel,
        )  # fmt: skip
    except ValueError as exc:
        print(f"nst-worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    if args.check:
        return check(config)

    try:
        device, description = _resolve_device(config.device)
    except ValueError as exc:
        print(f"nst-worker: {exc}", file=sys.stderr)
        return 1
    if not config.name:
        kind = "gpu" if config.device == FREE_GPU else device.replace(":", "")
        config.name = f"nst-{kind}-{os.getpid()}@{socket.gethostname()}"
    gpu_claim = None
    if config.device == FREE_GPU:
        from nst_core.device import describe_device

        client = redis.Redis.from_url(config.redis_url, socket_connect_timeout=3, socket_timeout=10)
        try:
            device, gpu_claim = claim_free_gpu(client, Keys(config.prefix), config.name, config.heartbeat_ttl_s * 4)
        except (ValueError, *TRANSIENT) as exc:
            print(f"nst-worker: {exc}", file=sys.stderr)
            return 1
        description = describe_device(device)
    from nst_core.device import default_size
    from nst_core.runner import measure_step_cost, warm_up

    seconds = warm_up(device)
    step_cost = measure_step_cost(device)
    presets.fetch_missing_in_background()
    log.info(
        "worker %s: VGG19 warm on %s in %.1f s (a step: %.0f ms + %.2f µs per pixel); queue at %s",
        config.name,
        description,
        seconds,
        step_cost.fixed_s * 1e3,
        step_cost.per_pixel_s * 1e6,
        safe_url(config.redis_url),
    )

    from celery.signals import worker_shutdown

    from nst_core.celery_app import QUEUE, TASK_NAME, create_app, send_job

    app = create_app(config.redis_url)
    runtime = WorkerRuntime(config, device, description)
    runtime.gpu_claim = gpu_claim
    runtime.durations.calibrate(step_cost)
    runtime.default_size = default_size(device)

    runtime.send_task = lambda job_id, again: send_job(app, job_id, again=again)

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_task(job_id: str) -> str:
        return runtime.run(job_id)

    exit_code = 0

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        nonlocal exit_code
        runtime.stop_heartbeat()
        exit_code = int(getattr(sender, "exitcode", 0) or 0)  # set when Celery gave up

    worker_shutdown.connect(on_shutdown, weak=False)
    runtime.start_heartbeat()
    app.worker_main(
        argv=[
            "worker", "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1", f"--queues={QUEUE}",
            f"--hostname={config.name}", "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--loglevel={config.loglevel.upper()}",
        ]
    )  # fmt: skip
    # worker_main drops Celery's exit code, and a worker Celery stopped on an "Unrecoverable
    # error" (say its Redis was demoted by a failover under an idle worker's blocking read)
    # must exit non-zero, so that a supervisor restarts it.
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
