"""The Celery application shared by the bot (which only sends) and ``nst-worker``.

Importing this module imports Celery but not torch, so the bot's process stays
light.  The worker registers the task body itself (``nst_core.celery_worker``);
the bot sends by name.

Why these settings:

* ``task_acks_late`` + ``worker_prefetch_multiplier=1`` + concurrency 1: a
  worker holds exactly the job it is running, so a second worker (or a worker
  on another machine) picks up the next job instead of it waiting behind a busy
  GPU, and a message is only acknowledged once its job has finished.
* ``task_reject_on_worker_lost``: if a pool process dies mid-job, the message
  goes back to the queue instead of being acknowledged as failed.  A whole
  worker that vanishes (SIGKILL, a machine lost) never gets to reject anything,
  and the Redis transport would only redeliver its message after the visibility
  timeout; the workers' heartbeat reaper (``celery_worker``) requeues such jobs
  within seconds instead, and the long visibility timeout below only mops up the
  orphaned message, which the job record then makes a no-op.
* No Celery result backend: results, progress and cancel flags are plain Redis
  keys handled by ``celery_store``, where they can be made exactly-once.
* The broker connection is retried forever, so workers ride out a Redis restart,
  and a job keeps painting through it (``worker_cancel_long_running_tasks_on_connection_loss``
  off, set here because Celery 6 means to turn it on): its record in ``celery_store``, not
  the broker's acknowledgement, decides whether it runs again.  Celery warns about that
  choice, many lines long, at every reconnect; the warning is silenced for that reason.
"""

from __future__ import annotations

import warnings

from celery import Celery
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import worker_ready

from nst_core.celery_store import redis_url

TASK_NAME = "nst.run_job"
QUEUE = "nst"
#: Long on purpose: a redelivery by the transport means a job runs twice (see above).
VISIBILITY_TIMEOUT_S = 6 * 3600
#: Message priorities.  The Redis transport keeps a list per priority step (0, 3, 6, 9 by
#: default) and serves the lowest number first, so a job whose worker died, which has
#: waited its turn once already, goes before every new one instead of to the back.
PRIORITY_NEW = 6
PRIORITY_AGAIN = 0


@worker_ready.connect
def _quiet_the_reconnect_warning(**_: object) -> None:
    """Only once the worker is up: Celery's logging set-up puts its own "always show" filter first."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5.1 we introduced", category=CPendingDeprecationWarning)


def create_app(url: str | None = None) -> Celery:
    """A Celery app talking to ``url`` (default: ``REDIS_URL``)."""
    app = Celery("nst", broker=redis_url(url), set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_timeout=3,
        broker_heartbeat=0,
        broker_pool_limit=4,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
            "retry_on_timeout": True,
        },
        # The bot's own retry loop (the executor's outbox) handles an unreachable broker,
        # so a send fails fast instead of blocking a thread for long.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
    )
    return app


def send_job(app: Celery, job_id: str, *, again: bool = False) -> None:
    """Send the message that makes a worker run ``job_id``; ``again`` for a job that was
    in the works before (requeued), which goes first."""
    priority = PRIORITY_AGAIN if again else PRIORITY_NEW
    app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=QUEUE, priority=priority)
