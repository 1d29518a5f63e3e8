"""The Redis side of the Celery executor: key layout, job records and atomic transitions.

Celery only carries a job id from the bot to a worker.  Everything else lives in
plain Redis keys next to the broker's lists, for three reasons:

* **Exactly-once results.**  Every state change of a job is one Lua script, so
  when a message is redelivered (a worker died after finishing, a lost job was
  requeued while its first worker was merely slow) only the first finisher
  stores a result and announces it; the others find the job finished and drop
  their copy.
* **A bot that can restart.**  Results and events wait in Redis (an append-only
  file keeps them across a Redis restart) until the executor has handed them
  to the bot, whichever process that is by then.
* **A real queue position.**  A sorted set of waiting job ids, kept in step with
  the Celery queue by the same scripts, answers "how many are ahead of me"
  without asking the broker or the workers.

Key layout (``P`` is the prefix, ``nst`` by default)::

    P:job:{id}      hash    state (queued|running|done|failed|cancelled), seq, submitted,
                            started, finished, worker, boot (the claiming process's
                            ``WorkerRuntime.boot``), attempts, sent
    P:in:{id}       hash    the job's inputs: meta (JSON), content, style:0, style:1, ...
    P:out:{id}      string  the finished image, until the executor has delivered it
    P:cancel:{id}   string  set by a cancel; workers poll it between optimisation steps
    P:pending       zset    queued job ids scored by submission order (requeued ones first)
    P:running       hash    job id -> worker name
    P:seq           counter submission order
    P:durations     list    seconds of the last 50 jobs (ETAs after a bot restart)
    P:events        stream  queued/started/done/failed/cancelled, read by the executor
                            through the consumer group ``bot``
    P:progress      stream  progress reports (same group; capped short, stale ones are dropped)
    P:worker:{name} string  a worker's heartbeat (JSON, expires after the heartbeat TTL)
    P:gpu:{uuid}    string  which worker holds that GPU (``--device cuda:free``), same TTL

Everything a job leaves behind is deleted once its final event has been
delivered; the rest expires (``job_ttl_s``) if the bot never comes back.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError, TryAgainError

from nst_core.executor import Job, StyleRef
from nst_core.settings import StyleSettings

_REFUSAL_CODES = re.compile(r"\b(MISCONF|NOREPLICAS|UNBLOCKED)\b")


def refuses_writes(exc: BaseException) -> bool:
    """Redis answers, but takes no writes for now.

    Over ``maxmemory`` (OOM), a replica after a failover (READONLY, and UNBLOCKED
    for a blocking read in flight at that moment), or a failed snapshot with
    ``stop-writes-on-bgsave-error`` (MISCONF, e.g. a full disk).
    None of them drops the connection, and each clears once an operator or the
    failover acts, so callers wait them out as they wait out a restart rather than
    lose a job's claim or result.  MISCONF has no exception class of its own in
    redis-py, so its code is looked for in the message (inside a pipeline the
    message starts with the failed command, not the code).
    """
    if isinstance(exc, OutOfMemoryError | ReadOnlyError | TryAgainError):
        return True
    return isinstance(exc, ResponseError) and _REFUSAL_CODES.search(str(exc)) is not None


#: Default Redis URL when neither an argument nor ``REDIS_URL`` says otherwise.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def check_redis_url(url: str) -> None:
    """ValueError unless ``url`` is one redis-py can open (the bot's and the workers' one check)."""
    if not url.lower().startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"must start with redis://, rediss:// or unix:// (e.g. {DEFAULT_REDIS_URL})")


#: Consumer group (and consumer) the executor reads the event stream with.
EVENT_GROUP = "bot"
EVENT_CONSUMER = "executor"
#: Approximate cap on the event stream; entries are deleted once handled, so it
#: only fills up while no bot is reading.
EVENTS_MAXLEN = 100_000
#: Progress reports go to their own, short stream: they are worth nothing once stale, and
#: while no bot reads (hours, a few reports a second per worker) they must not push the
#: outcomes out of the main stream.
PROGRESS_MAXLEN = 2_000
#: How long a job's keys live if nobody ever collects them (two days).
DEFAULT_JOB_TTL_S = 2 * 24 * 3600
TERMINAL = frozenset({"done", "failed", "cancelled"})
#: How many times a job may be started.  A job whose worker dies under it (killed for
#: memory, a crash in the driver) is put back in the queue; one that keeps killing
#: workers would otherwise take them down one after the other, forever.
MAX_ATTEMPTS = 3
#: What the user is told when a job has used up its attempts (``JobFailed.reason``).
GAVE_UP_REASON = (
    f"the painter stopped {MAX_ATTEMPTS} times while working on this picture, so I gave up on it "
    "(it may be too large for the painters' memory)"
)


def redis_url(url: str | None = None) -> str:
    return url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def parse_steps(text: str | None) -> tuple[int, ...] | None:
    """``"3"`` or ``"30,15"`` -> a step schedule override; empty -> None (the quality's own)."""
    if not text or not text.strip():
        return None
    parts = [part for part in text.replace(" ", "").split(",") if part]
    steps = tuple(int(part) for part in parts if part.isdigit())
    if not steps or len(steps) < len(parts) or any(s < 1 for s in steps):
        raise ValueError(f"steps must be positive whole numbers separated by commas, not {text!r}")
    return steps


@dataclass(frozen=True)
class Keys:
    """Names of every Redis key the executor and the workers share."""

    prefix: str = "nst"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def inputs(self, job_id: str) -> str:
        return f"{self.prefix}:in:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:out:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def gpu(self, uuid: str) -> str:
        return f"{self.prefix}:gpu:{uuid}"

    @property
    def worker_prefix(self) -> str:
        return f"{self.prefix}:worker:"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def durations(self) -> str:
        return f"{self.prefix}:durations"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def progress(self) -> str:
        return f"{self.prefix}:progress"

    def for_job(self, job_id: str) -> list[str]:
        """The KEYS every per-job script takes, in this order."""
        return [
            self.job(job_id), self.inputs(job_id), self.result(job_id), self.cancel(job_id),
            self.pending, self.running, self.seq, self.events, self.durations, self.progress,
        ]  # fmt: skip


# ---------------------------------------------------------------------------
# Job inputs <-> Redis hash


def encode_inputs(job: Job, steps: tuple[int, ...] | None = None, timeout_s: float | None = None) -> dict[str, bytes]:
    """The fields of ``P:in:{id}``: JSON meta plus raw image bytes (no base64 in the queue)."""
    styles: list[dict[str, Any]] = []
    fields: dict[str, bytes] = {"content": job.content}
    for i, ref in enumerate(job.styles):
        if ref.preset is not None:
            styles.append({"preset": ref.preset})
        else:
            assert ref.image is not None
            styles.append({"image": f"style:{i}"})
            fields[f"style:{i}"] = ref.image
    meta = {
        "settings": job.settings.to_dict(),
        "format": job.output_format,
        "styles": styles,
        "steps": list(steps) if steps else None,
        "timeout_s": timeout_s,
    }
    fields["meta"] = json.dumps(meta).encode()
    return fields


def decode_inputs(job_id: str, fields: dict[bytes, bytes]) -> tuple[Job, tuple[int, ...] | None, float | None]:
    """Rebuild the ``Job`` a worker runs, with the optional step override and time limit."""
    meta = json.loads(fields[b"meta"])
    styles = tuple(
        StyleRef(preset=s["preset"]) if "preset" in s else StyleRef(image=fields[s["image"].encode()])
        for s in meta["styles"]
    )
    job = Job(
        id=job_id,
        content=fields[b"content"],
        styles=styles,
        settings=StyleSettings.from_dict(meta["settings"]),
        output_format=meta.get("format") or "JPEG",
    )
    steps = tuple(meta["steps"]) if meta.get("steps") else None
    return job, steps, meta.get("timeout_s")


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker's heartbeat says about it."""

    name: str
    device: str
    description: str
    host: str = ""
    pid: int = 0
    started: float = 0.0
    job: str | None = None
    jobs_done: int = 0
    #: The step time the worker measured at boot (``runner.measure_step_cost``), so that
    #: a bot's ETAs are in its workers' seconds from the first job; 0 from older workers.
    step_fixed_s: float = 0.0
    step_per_pixel_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if k != "extra"})

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerInfo:
        data = json.loads(text)
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known, extra=data)


def decode_event(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


# ---------------------------------------------------------------------------
# Lua: every transition of a job is atomic.  KEYS are always ``Keys.for_job``:
#   1 job  2 inputs  3 result  4 cancel  5 pending  6 running  7 seq  8 events  9 durations  10 progress

_MAXLEN = str(EVENTS_MAXLEN)
_PROGRESS_MAXLEN = str(PROGRESS_MAXLEN)
_MAX_ATTEMPTS = str(MAX_ATTEMPTS)


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal, for constants written into the scripts."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _give_up(now: str) -> str:
    """Lua that fails a job which has been started ``MAX_ATTEMPTS`` times, as if its worker had
    reported it (ARGV[1] is the id, ARGV[2] a worker name, ``now`` a Lua expression for the time).

    CLAIM and REQUEUE, the two ways a job gets another run, both end in it.
    """
    return f"""  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished', {now})
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'failed', 'job', ARGV[1], 't', {now},
    'worker', ARGV[2], 'reason', {_lua_string(GAVE_UP_REASON)}, 'retryable', '0')"""


#: Store a new job (no-op for a known id).  ARGV: id, now, ttl, meta, content, then
#: alternating style field names and bytes.  Returns {status, state, sent}.
SUBMIT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  return {'known', state, redis.call('HGET', KEYS[1], 'sent') or '0'}
end
local seq = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'state', 'queued', 'seq', seq, 'submitted', ARGV[2], 'sent', '0', 'attempts', 0)
redis.call('HSET', KEYS[2], 'meta', ARGV[4], 'content', ARGV[5])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[5], seq, ARGV[1])
return {'new', 'queued', '0'}
"""

#: A worker takes a job.  ARGV: id, worker, now, heartbeat key prefix, the worker's boot token.
#: Returns 'run', or why not: 'gone' | 'done' | 'failed' | 'cancelled' | 'busy', or
#: 'gave-up' when the job had already been started ``MAX_ATTEMPTS`` times (it is failed).
CLAIM = f"""
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state == 'done' or state == 'failed' or state == 'cancelled' then return state end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'cancelled', 'job', ARGV[1], 't', ARGV[3])
  return 'cancelled'
end
if state == 'running' then
  local owner = redis.call('HGET', KEYS[6], ARGV[1])
  if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[4] .. owner) == 1 then
    return 'busy'
  end
end
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') >= {_MAX_ATTEMPTS} then
{_give_up("ARGV[3]")}
  return 'gave-up'
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'started', ARGV[3], 'boot', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*',
  'type', 'started', 'job', ARGV[1], 't', ARGV[3], 'worker', ARGV[2])
return 'run'
"""

#: A worker's progress report; dropped unless the job is still running.  ARGV: id, now, fraction, eta.
PROGRESS = f"""
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('XADD', KEYS[10], 'MAXLEN', '~', {_PROGRESS_MAXLEN}, '*',
  'type', 'progress', 'job', ARGV[1], 't', ARGV[2], 'fraction', ARGV[3], 'eta', ARGV[4])
return 1
"""

#: A worker's outcome.  ARGV: id, worker, now, ttl, kind (done|failed|cancelled), then
#: for done: image, seconds, width, height, format; for failed: reason, retryable.
#: Only the first outcome of a job counts (1); later ones are dropped (0).  A job
#: cancelled while it ran is reported cancelled even if it finished first (2).  A job
#: with no record left (cleaned up after its outcome, cancelled while queued, or lost
#: with Redis's data) is dropped too (3).
FINISH = f"""
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 3 end
if state ~= 'queued' and state ~= 'running' then return 0 end
local kind = ARGV[5]
local result = 1
if kind ~= 'cancelled' and redis.call('EXISTS', KEYS[4]) == 1 then
  kind = 'cancelled'
  result = 2
end
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[1], 'state', kind, 'finished', ARGV[3], 'worker', ARGV[2])
if kind == 'done' then
  redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[4])
  redis.call('LPUSH', KEYS[9], ARGV[7])
  redis.call('LTRIM', KEYS[9], 0, 49)
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'done', 'job', ARGV[1], 't', ARGV[3],
    'worker', ARGV[2], 'seconds', ARGV[7], 'width', ARGV[8], 'height', ARGV[9], 'format', ARGV[10])
elseif kind == 'failed' then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'failed', 'job', ARGV[1], 't', ARGV[3],
    'worker', ARGV[2], 'reason', ARGV[6], 'retryable', ARGV[7])
else
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'cancelled', 'job', ARGV[1], 't', ARGV[3],
    'worker', ARGV[2])
end
return result
"""

#: The bot cancels.  ARGV: id, now, ttl, heartbeat key prefix.  A queued job is cancelled
#: (and cleaned up) on the spot: 'cancelled'; so is a running one whose worker's heartbeat
#: has lapsed (nobody is painting it, and no worker may be left to report it cancelled);
#: a running one gets the flag its worker polls: 'cancelling'; otherwise 'unknown' or its
#: final state.
CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'unknown' end
if state == 'done' or state == 'failed' or state == 'cancelled' then return state end
local owner = redis.call('HGET', KEYS[6], ARGV[1])
local orphan = state == 'running' and (not owner or redis.call('EXISTS', ARGV[4] .. owner) == 0)
if state == 'queued' or orphan then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  -- A worker that only seemed dead (Redis paused, a stalled host) still polls the flag: it stops.
  if orphan then redis.call('SET', KEYS[4], '1', 'EX', ARGV[3]) end
  return 'cancelled'
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
return 'cancelling'
"""

#: Taken off a requeued job's place in the pending set: it goes before every job that was
#: waiting, as its Celery message does (``celery_app.send_job``), in its old order.
_FRONT_OF_THE_LINE = 10**12

#: A worker's reaper found ``owner`` silent, or found a job that its own name holds from a
#: previous run of the process: put the job back in the queue.  ARGV: id, owner, heartbeat
#: key prefix, now, and, only when ``owner`` is the caller's own name, the caller's boot
#: token.  A worker restarted under the same name (same PID in a container, same host)
#: beats under the same key at once, so for its own name the heartbeat proves nothing;
#: the boot token the claim stored tells this process's jobs from its predecessor's.
#: Returns 1 if this caller must send the task again, 2 if the job had used up its
#: attempts and was failed instead, 3 if it had been cancelled meanwhile, else 0.
REQUEUE = f"""
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[5] then
  if redis.call('HGET', KEYS[1], 'boot') == ARGV[5] then return 0 end
elseif redis.call('EXISTS', ARGV[3] .. ARGV[2]) == 1 then
  return 0
end
redis.call('HDEL', KEYS[6], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then  -- cancelled while its worker was gone: done with it
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', ARGV[4])
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'cancelled', 'job', ARGV[1], 't', ARGV[4])
  return 3
end
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') >= {_MAX_ATTEMPTS} then
{_give_up("ARGV[4]")}
  return 2
end
local seq = redis.call('HGET', KEYS[1], 'seq') or redis.call('INCR', KEYS[7])
local why = ARGV[5] and ' restarted' or ' was lost'
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'requeued', ARGV[4], 'sent', '0')
redis.call('ZADD', KEYS[5], tonumber(seq) - {_FRONT_OF_THE_LINE}, ARGV[1])
redis.call('XADD', KEYS[8], 'MAXLEN', '~', {_MAXLEN}, '*', 'type', 'queued', 'job', ARGV[1], 't', ARGV[4],
  'reason', 'worker ' .. ARGV[2] .. why)
return 1
"""

#: A queued job's message went out long ago and an idle worker never received it: Celery's Redis
#: transport can drop a message it took on a connection that Redis restarted under it.  Claims
#: the right to send it again, once per ``ARGV[2]`` seconds whoever asks.  ARGV: now, seconds.
#: Returns 1 if the caller must send it, else 0.
RESEND = """
local f = redis.call('HMGET', KEYS[1], 'state', 'submitted', 'requeued', 'resent')
if f[1] ~= 'queued' then return 0 end
local since = math.max(tonumber(f[2] or '0'), tonumber(f[3] or '0'), tonumber(f[4] or '0'))
if tonumber(ARGV[1]) - since < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'resent', ARGV[1])
return 1
"""

#: The job's Celery message has gone out.  ARGV: none.  Only for a job that still exists:
#: a cancel may have deleted a queued job while its message was being sent, and a plain
#: HSET would bring the hash back as a key with one field and no expiry, forever.
MARK_SENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'sent', '1')
return 1
"""

#: The executor has delivered a job's final event: delete every trace of it.  ARGV: id.
FORGET = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""
