"""The service under the handlers: accept requests, run them on the executor, deliver results.

Handlers parse an update and call one method here; everything that has to stay
true across users, restarts and failures lives in this module:

* a request is validated and limited, written to SQLite as ``queued`` and only
  then handed to the executor, so a crash after "you're #3 in the queue" still
  has the job;
* executor events update the job row at once and drive the status message
  (queue position → "Painting… 40%" → deleted), edited only when its text
  changes and at most every ``status_interval_s``;
* the result photo is sent as a reply to the content photo and its delivery is
  recorded in the job row with a conditional update, so it happens once;
* on start-up, queued and interrupted jobs are re-queued by downloading their
  inputs again by Telegram file id, and finished-but-undelivered ones are sent.

The executor runs torch on its own worker; nothing here touches it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.helpers import mention_html

from bot import texts
from bot.config import BotConfig
from bot.db import ACTIVE, Database, JobRow
from bot.rate_limit import SKIPPABLE, Skipped
from nst_core import presets
from nst_core.executor import (
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
    StyleRef,
    is_time_limit,
)
from nst_core.images import HeicNotSupported, ImageError, open_image
from nst_core.schedule import paint_size
from nst_core.settings import Quality, StyleSettings

log = logging.getLogger(__name__)

SIZE_NAMES = ("small", "medium", "large")
IMAGE_CACHE_BYTES = 64 * 1024 * 1024
#: How long a cancel's answer waits for a painting to confirm that it stopped.
CANCEL_CONFIRM_S = 1.5
#: How long a sent result's answer is awaited.  The bot's other calls give up after 15 s, but a
#: result that timed out may well have arrived, and sending it again shows it twice.
RESULT_READ_TIMEOUT_S = 90.0
#: Delivery retries after Telegram stayed unreachable: 30 s, doubling, at most 15 min apart.
REDELIVERY_FIRST_S = 30.0
REDELIVERY_MAX_S = 900.0
#: How often old result files are removed while the bot runs.
PRUNE_INTERVAL_S = 6 * 3600.0


class RequestError(Exception):
    """A request cannot be accepted; ``str(exc)`` is the friendly (HTML) reply for the user.

    ``keeps_photo``: the photo is still to be painted, so it goes on waiting for a style (a
    limit, a failed download); not so when it is already in the works.
    """

    def __init__(self, text: str, *, keeps_photo: bool = True) -> None:
        super().__init__(text)
        self.keeps_photo = keeps_photo


@dataclass(frozen=True)
class Requester:
    """Who asked and where the answer goes."""

    user_id: int
    chat_id: int
    chat_type: str
    name: str

    @property
    def in_group(self) -> bool:
        return self.chat_type != "private"


@dataclass(frozen=True)
class ImageRef:
    """A picture the user sent: its Telegram file id and the message it came in."""

    file_id: str
    message_id: int | None
    file_size: int | None = None


@dataclass(frozen=True)
class Prefs:
    """A user's choices as stored in SQLite; turned into ``StyleSettings`` per job."""

    strength: int = 5
    size: str = "medium"
    quality: str = Quality.BALANCED.value
    colors: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prefs:
        prefs = cls()
        with contextlib.suppress(TypeError, ValueError):
            strength = int(data.get("strength", prefs.strength))
            size = str(data.get("size", prefs.size))
            quality = str(data.get("quality", prefs.quality))
            return cls(
                strength=strength if 1 <= strength <= 10 else prefs.strength,
                size=size if size in SIZE_NAMES else prefs.size,
                quality=quality if quality in {q.value for q in Quality} else prefs.quality,
                colors=bool(data.get("colors", prefs.colors)),
            )
        return prefs

    def to_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "size": self.size, "quality": self.quality, "colors": self.colors}


class StatusMessage:
    """One job's status message: edits only on a text change, at most every ``interval`` seconds.

    A change that comes too soon is kept and sent when the interval is up (the
    latest text wins), so the message never lags behind for long and never
    spams Telegram's edit limits.
    """

    def __init__(
        self, service: JobService, job_id: str, chat_id: int, message_id: int, text: str, heading: str = ""
    ) -> None:
        self.service = service
        self.job_id = job_id
        self.chat_id = chat_id
        self.message_id = message_id
        self.text = text
        self.sent_at = time.monotonic()
        self.pending: str | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.closed = False
        self.lock = asyncio.Lock()
        self.heading = heading  # whose job it is, where the message can't reply to their photo

    def update(self, text: str) -> None:
        if self.closed or text == (self.pending or self.text):
            return
        self.pending = text
        wait = self.service.config.status_interval_s - (time.monotonic() - self.sent_at)
        if self.flusher is None or self.flusher.done():
            self.flusher = self.service.spawn(self._flush_after(max(0.0, wait)))

    async def _flush_after(self, delay: float) -> None:
        # A change that comes while an edit is on its way waits for this task, not a new one:
        # so it goes round again, or a queue position could stay stale until the next event.
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            while (wait := self.service.group_edit_wait(self.chat_id)) > 0:
                await asyncio.sleep(wait)
            async with self.lock:
                text, self.pending = self.pending, None
                if self.closed or text is None:
                    return
                if text != self.text:
                    await self._edit(text)
                if self.pending is None:
                    return
            delay = self.service.config.status_interval_s - (time.monotonic() - self.sent_at)

    async def _edit(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        shown, self.text = self.text, text
        self.sent_at = time.monotonic()
        if markup is None and text not in texts.CANCELLING_TEXTS:  # no Cancel button on "Cancelling…"
            markup = self.cancel_markup()
        try:
            await self.service.bot.edit_message_text(
                self.heading + text,
                chat_id=self.chat_id,
                message_id=self.message_id,
                reply_markup=markup,
                rate_limit_args=SKIPPABLE,
            )
        except Skipped:  # a busy group's budget goes to replies first: try again after the interval
            self.text = shown
            if self.pending is None:
                self.pending = text
            if self.flusher is None or self.flusher.done():  # not from the flusher (a restart's first edit)
                self.flusher = self.service.spawn(self._flush_after(self.service.config.status_interval_s))
        except ChatMigrated as exc:  # missed the service message; moving takes this message's lock
            self.service.spawn(self.service.chat_migrated(self.chat_id, exc.new_chat_id))
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                log.info("status edit for job %s failed: %s", self.job_id, exc)
        except Forbidden:
            await self.service.user_blocked(self.job_id)
        except TelegramError as exc:  # a timeout or a 5xx: the next update (or the result) follows anyway
            log.info("status edit for job %s failed: %s", self.job_id, exc)

    def cancel_markup(self) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("✖ Cancel", callback_data=f"x:{self.job_id}")]])

    async def finish(self, text: str | None) -> None:
        """Final state: edit to ``text`` without buttons, or delete the message if None."""
        if self.flusher is not None and not self.flusher.done():
            self.flusher.cancel()
        async with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                if text is None:
                    await self.service.bot.delete_message(self.chat_id, self.message_id)
                else:
                    await self.service.bot.edit_message_text(
                        self.heading + text, chat_id=self.chat_id, message_id=self.message_id, reply_markup=None
                    )
            except Forbidden:
                await self.service.user_blocked(self.job_id)
            except TelegramError as exc:
                log.info("closing status of job %s failed: %s", self.job_id, exc)

    async def move_to(self, chat_id: int, heading: str) -> int | None:
        """Go on as a new message in ``chat_id`` (a group became a supergroup); its message id.

        The old message stays behind as it was: the old chat takes no more edits.
        """
        async with self.lock:
            if self.closed or chat_id == self.chat_id:
                return None
            self.chat_id, self.heading = chat_id, heading
            text, self.pending = self.pending or self.text, None
            try:
                msg = await self.service.bot.send_message(chat_id, heading + text, reply_markup=self.cancel_markup())
            except TelegramError as exc:  # no message to edit: the result still comes
                log.info("status of job %s not moved to chat %s: %s", self.job_id, chat_id, exc)
                self.closed = True
                return None
            self.message_id, self.text, self.sent_at = msg.message_id, text, time.monotonic()
            return msg.message_id


def _heading(job: JobRow) -> str:
    """In a group a status message says whose it is by replying to the photo; one from before an
    upgrade to a supergroup can't be replied to, so the message names its owner instead."""
    return texts.status_heading(job.user_name) if job.chat_type != "private" and not job.content_message_id else ""


def _track(coro: Awaitable[Any], tasks: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
    """Start ``coro`` as a task held in ``tasks`` until it ends (asyncio keeps only weak references)."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("background task failed", exc_info=t.exception())

    task.add_done_callback(done)
    return task


class JobService:
    """Requests in, results out; the only thing handlers talk to besides the database."""

    def __init__(self, config: BotConfig, db: Database, executor: Executor) -> None:
        self.config = config
        self.db = db
        self.executor = executor
        self._bot: Bot | None = None
        self.max_size: int = 4096
        self._status: dict[str, StatusMessage] = {}
        self._cancel_requested: set[str] = set()
        self._delivering: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._job_locks: dict[str, asyncio.Lock] = {}
        self._images: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._images_bytes = 0
        self._started = False
        self._started_at = 0.0
        #: Set once the last run's jobs are back in the executor: new ones queue behind them.
        self._recovered = asyncio.Event()
        self._dropped: set[str] = set()
        self._retried: set[str] = set()  # jobs submitted again after a retryable failure (once each)
        self._redeliveries: dict[str, int] = {}
        self._group_edit_at: dict[int, float] = {}  # chat id -> when its next status edit may go
        self._moved: dict[int, int] = {}  # basic group id -> the supergroup it became
        # Timers, not work: cancelled at once on stop (recovery delivers what they would have).
        self._timers: set[asyncio.Task[Any]] = set()

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def bot(self) -> Bot:
        if self._bot is None:
            raise RuntimeError("JobService is not started")
        return self._bot

    async def start(self, bot: Bot) -> None:
        """Open the executor and bring back what the last run left behind."""
        self._bot = bot
        self._moved = await self.db.moved_chats()
        self.config.results_dir.mkdir(parents=True, exist_ok=True)
        self.max_size = await asyncio.to_thread(self._device_max_size)
        # Before the executor starts: the outcome of a cancel the last run asked for may be among
        # the first events (a remote painter stopped while the bot was down).
        self._cancel_requested = set(await self.db.pending_cancels())
        await self.executor.start(self._on_event)
        self._started = True
        self._started_at = time.time()
        self._recovered.clear()
        self.spawn(self.recover())
        self._timer(self._prune_every(PRUNE_INTERVAL_S))

    def _device_max_size(self) -> int:
        try:
            size = self.executor.max_size() or 4096
            # Which device and CPU precision (chosen by a probe) jobs will run on: it explains their times.
            log.info("painting on %s; sizes up to %d px", self.executor.device, size)
            return size
        except Exception:  # an unknown device still lets the bot answer; jobs will say why they fail
            log.warning("could not size the device %r", self.config.device, exc_info=True)
            return 4096

    async def stop(self) -> None:
        """Stop taking work; running and queued jobs stay in SQLite for the next start."""
        if not self._started:
            return
        self._started = False
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        await self.executor.stop(grace_s=self.config.stop_grace_s)
        # A cancel the stop overtook (the painting was interrupted before it confirmed) is
        # still a cancel: left active, the row would be painted again at the next start.
        for job_id in list(self._cancel_requested):
            await self._cancelled(job_id)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=10)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)

    def _timer(self, coro: Awaitable[Any]) -> None:
        """A background wait (periodic pruning, a later delivery) that stop() cancels instead of awaiting."""
        _track(coro, self._timers)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference and logging its failure."""
        return _track(coro, self._tasks)

    # --- settings -----------------------------------------------------------------------------
    async def prefs(self, user_id: int) -> Prefs:
        return Prefs.from_dict(await self.db.get_settings(user_id))

    async def painted_before(
        self,
        who: Requester,
        content_file_id: str,
        preset: str | None,
        style_file_id: str | None,
        settings: StyleSettings,
    ) -> bool:
        """Whether this chat already has this photo painted so: the engine would paint it the same again."""
        for done in await self.db.delivered_of(who.user_id, who.chat_id, content_file_id):
            same_style = (done.style_preset, done.style_file_id) == (preset, style_file_id)
            if same_style and StyleSettings.from_dict(done.settings) == settings:
                return True
        return False

    async def save_prefs(self, user_id: int, prefs: Prefs) -> None:
        await self.db.set_settings(user_id, prefs.to_dict())

    def size_px(self, name: str) -> int:
        wanted = {
            "small": self.config.size_small,
            "medium": self.config.size_medium,
            "large": self.config.size_large,
        }.get(name, self.config.size_medium)
        return min(wanted, self.max_size)

    def price(self, prefs: Prefs) -> str:
        """The settings' cost line: a picture's time here, for a photo of the commonest shape (4:3)."""
        long_side = self.size_px(prefs.size)
        seconds = self.executor.picture_seconds((long_side, long_side * 3 // 4), self.style_settings(prefs))
        return texts.price(seconds, self.config.job_timeout_s)

    def style_settings(self, prefs: Prefs) -> StyleSettings:
        return StyleSettings(
            strength=prefs.strength,
            size=self.size_px(prefs.size),
            quality=Quality(prefs.quality),
            preserve_colors=prefs.colors,
        )

    # --- inputs -------------------------------------------------------------------------------
    def check_file_size(self, size: int | None) -> None:
        if size is not None and size > self.config.download_limit:
            raise RequestError(texts.file_too_big(size, self.config.download_limit))

    async def download(self, ref: ImageRef) -> bytes:
        """The bytes behind a file id (kept a while, since a request often reuses them)."""
        cached = self._images.get(ref.file_id)
        if cached is not None:
            self._images.move_to_end(ref.file_id)
            return cached
        self.check_file_size(ref.file_size)
        try:
            tg_file = await self.bot.get_file(ref.file_id)
            self.check_file_size(tg_file.file_size)
            data = bytes(await tg_file.download_as_bytearray())
        except RequestError:
            raise
        except BadRequest as exc:
            if "too big" in str(exc).lower():
                raise RequestError(texts.file_too_big(ref.file_size or 0, self.config.download_limit)) from None
            log.warning("download of %s failed: %s", ref.file_id, exc)
            raise RequestError(texts.DOWNLOAD_FAILED) from None
        except TelegramError as exc:
            log.warning("download of %s failed: %s", ref.file_id, exc)
            raise RequestError(texts.DOWNLOAD_FAILED) from None
        self._remember(ref.file_id, data)
        return data

    def _remember(self, file_id: str, data: bytes) -> None:
        if len(data) > IMAGE_CACHE_BYTES // 4:
            return
        self._images[file_id] = data
        self._images_bytes += len(data)
        while self._images_bytes > IMAGE_CACHE_BYTES:
            _, old = self._images.popitem(last=False)
            self._images_bytes -= len(old)

    async def check_image(self, ref: ImageRef, what: str = "photo") -> tuple[int, int]:
        """Download and fully decode the picture now, so a bad one is refused right away."""
        data = await self.download(ref)
        limit = self.config.max_pixels
        size = await asyncio.to_thread(_header_size, data)
        if size is not None and size[0] * size[1] > limit:
            self._images.pop(ref.file_id, None)
            raise RequestError(texts.too_many_pixels(size[0], size[1], limit))
        try:
            img = await asyncio.to_thread(open_image, data, what=what, max_pixels=limit)
            if what == "photo":  # too long and thin at any size (a style strip is cropped instead)
                paint_size(img.size, self.config.size_medium)
        except HeicNotSupported:
            self._images.pop(ref.file_id, None)
            raise RequestError(texts.HEIC_AS_PHOTO) from None
        except ImageError as exc:
            self._images.pop(ref.file_id, None)
            raise RequestError(texts.bad_image(str(exc))) from None
        return img.size

    # --- accepting a request ------------------------------------------------------------------
    async def submit(
        self,
        who: Requester,
        content: ImageRef,
        *,
        preset: str | None = None,
        style: ImageRef | None = None,
        settings: StyleSettings | None = None,
        then: str | None = None,
    ) -> JobRow:
        """Queue a complete request: limits, job row, status message, then the executor.

        ``then`` tells the user how to ask again if a limit refuses it; by default,
        send the style again (in a private chat) or /stylize again (in a group).
        """
        if then is None:
            then = texts.RESEND_IN_GROUP if who.in_group else texts.RESEND_STYLE
        if (preset is None) == (style is None):
            raise ValueError("a request has either a preset or a style image")
        if preset is not None:
            preset = presets.get(preset).slug
        if settings is None:
            settings = self.style_settings(await self.prefs(who.user_id))
        # A cancelled job that is still stopping (a step or two) no longer counts: "Cancelled" means room.
        active = [job for job in await self.db.active_jobs(who.user_id) if job.id not in self._cancel_requested]
        style_file_id = style.file_id if style else None
        # Painted but not yet taken by Telegram is in the works too: it would come twice.
        sending = [j for j in await self.db.undelivered_done() if j.user_id == who.user_id]
        for job in active + sending:  # a double tap on a button, say: the same picture twice, byte for byte
            same_style = (job.style_preset, job.style_file_id) == (preset, style_file_id)
            same_inputs = job.chat_id == who.chat_id and job.content_file_id == content.file_id and same_style
            if same_inputs and StyleSettings.from_dict(job.settings) == settings:
                raise RequestError(texts.ALREADY_IN_THE_WORKS, keeps_photo=False)
        if len(active) >= self.config.max_jobs_per_user:
            # In a group, pictures asked for elsewhere are out of reach of this chat's /cancel.
            elsewhere = sum(job.chat_id != who.chat_id for job in active) if who.in_group else 0
            raise RequestError(texts.too_many_jobs(self.config.max_jobs_per_user, then, elsewhere=elsewhere))
        in_queue = await self.db.count_active()
        if in_queue >= self.config.max_queue:
            hold = self.executor.hold
            if hold in (Hold.NO_WORKER, Hold.UNREACHABLE):
                raise RequestError(texts.busy(None, then, hold))
            raise RequestError(texts.busy(await self._time_to_room(in_queue), then))
        row = JobRow(
            id=uuid.uuid4().hex[:16],
            user_id=who.user_id,
            chat_id=who.chat_id,
            chat_type=who.chat_type,
            user_name=who.name,
            content_file_id=content.file_id,
            content_message_id=content.message_id,
            style_preset=preset,
            style_file_id=style_file_id,
            settings=settings.to_dict(),
        )
        # Inputs first: a download failure must not leave a job behind.
        content_bytes = await self.download(content)
        # A picture that would run into the time limit fails after all that wait: say so now.
        size = await asyncio.to_thread(_header_size, content_bytes)
        own = self.executor.picture_seconds(size, settings) if size else None
        if own is not None and own > self.config.job_timeout_s:
            raise RequestError(texts.too_slow(own, self.config.job_timeout_s))
        style_bytes = await self.download(style) if style else None
        await self.db.insert_job(row)
        log.info("job %s queued for user %s in chat %s", row.id, who.user_id, who.chat_id)
        # 1 = next to start, as the executor counts; the running job is not "in the queue".
        position = await self.db.count_active("queued")
        note = texts.small_photo(*size, settings.size) if size and 2 * max(size) < (settings.size or 0) else ""
        if (hold := self.executor.hold) is not None:
            await self._open_status(row, texts.queued(position, None, hold), note)
        else:
            eta = await self.executor.estimate(self._job_for(row, content_bytes, style_bytes))
            if eta is None:
                eta = await self.db.count_active() * (await self.db.typical_seconds() or 30.0)
            await self._open_status(row, texts.queued(position, eta), note)
        if self._recovered.is_set():
            await self._hand_over(row, content_bytes, style_bytes)
        else:  # not waited for here: the user's next updates (Cancel, /help) queue behind this one
            self.spawn(self._hand_over(row, content_bytes, style_bytes))
        return row

    async def _time_to_room(self, in_queue: int) -> float:
        """Seconds until the queue takes another picture: when the first in the works is done."""
        left = [await self.executor.eta(job.id) for job in await self.db.jobs_with_status(ACTIVE)]
        if known := [s for s in left if s is not None]:
            return min(known)
        return in_queue * (await self.db.typical_seconds() or 60.0)

    async def _hand_over(self, row: JobRow, content: bytes, style: bytes | None, *, recovering: bool = False) -> None:
        """Give the job to the executor, unless it was cancelled while its status message went out.

        Telegram shows the message and its Cancel button before the bot has the answer,
        and a press there only finds the row: the executor has no job to stop yet.
        A new job waits for the last run's jobs to be back in line, or it would go before them.
        """
        if not recovering:
            await self._recovered.wait()
        if row.id in self._dropped:  # blocked the bot in the meantime: don't paint for nobody
            return
        if await self._status_of(row.id) == "cancelled":
            await self._close_status(row.id, texts.CANCELLED)
            return
        await self.executor.submit(self._job_for(row, content, style))
        if await self._status_of(row.id) == "cancelled":  # pressed while the executor took it
            await self.executor.cancel(row.id)

    def _job_for(self, row: JobRow, content: bytes, style: bytes | None) -> Job:
        ref = StyleRef(preset=row.style_preset) if row.style_preset else StyleRef(image=style)
        return Job(row.id, content, (ref,), StyleSettings.from_dict(row.settings))

    def group_edit_wait(self, chat_id: int) -> float:
        """Seconds until a status edit in this chat may go; 0 takes the slot.

        Telegram lets a bot send a group about 20 messages a minute, and edits count.
        Unpaced, the progress of a few jobs used the whole budget, and the rate limiter
        then held command replies and finished pictures back by 10-25 s.  So all status
        messages in one group share one edit every ``group_status_interval_s``.  Private
        chats (positive ids; groups' are negative) have no such limit.
        """
        interval = self.config.group_status_interval_s
        if chat_id >= 0 or interval <= 0:
            return 0.0
        now = time.monotonic()
        due = self._group_edit_at.get(chat_id, 0.0)
        if now < due:
            return due - now
        self._group_edit_at[chat_id] = now + interval
        return 0.0

    async def _open_status(self, row: JobRow, text: str, note: str = "") -> None:
        """Send (or after a restart, reuse) the job's status message; ``note`` heads it while it lasts."""
        heading = _heading(row) + note
        status: StatusMessage | None = None
        if row.status_message_id is not None:
            status = StatusMessage(self, row.id, row.chat_id, row.status_message_id, "", heading)
            self._status[row.id] = status
            async with status.lock:
                await status._edit(text)
            return
        try:
            msg = await self.bot.send_message(
                row.chat_id,
                heading + text,
                reply_parameters=self._reply_to(row.content_message_id),
                reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("✖ Cancel", callback_data=f"x:{row.id}")]]),
            )
        except Forbidden:
            await self.user_blocked(row.id)
            return
        except TelegramError as exc:
            log.warning("could not send the status of job %s: %s", row.id, exc)
            return
        await self.db.update_job(row.id, status_message_id=msg.message_id)
        self._status[row.id] = StatusMessage(self, row.id, row.chat_id, msg.message_id, text, heading)

    @staticmethod
    def _reply_to(message_id: int | None) -> ReplyParameters | None:
        if message_id is None:
            return None
        return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)

    # --- cancelling and looking -------------------------------------------------------------
    async def cancel(self, job_id: str) -> bool:
        """Cancel one job; True if it was still queued or running."""
        job = await self.db.get_job(job_id)
        if job is None or job.status not in ACTIVE:
            return False
        await self.db.request_cancel(job_id)
        self._cancel_requested.add(job_id)
        known = await self.executor.cancel(job_id)
        if not known or job.status == "queued":
            # A queued job is gone at once; a running one stops within a step and confirms.
            await self._cancelled(job_id)
        else:  # not "Painting… 40%", nor "safe in the queue" when its queue is out of reach
            self._status_update(job_id, texts.CANCELLING_HELD if self.unreachable else texts.CANCELLING)
        return True

    async def active_elsewhere(self, user_id: int, chat_id: int) -> int:
        """How many of the user's pictures are in the works in chats other than ``chat_id``."""
        return sum(job.chat_id != chat_id for job in await self.db.active_jobs(user_id))

    async def cancel_all(self, user_id: int, chat_id: int | None = None) -> tuple[int, int]:
        """Cancel the user's jobs: how many, and how many of those are still stopping."""
        # Newest first: a painting stopped before the pictures behind it lets the next one start,
        # and "Painting… 0%" flashes on a picture the same /cancel is about to cancel.
        jobs = await self.db.active_jobs(user_id, chat_id)
        asked = [job.id for job in reversed(jobs) if await self.cancel(job.id)]
        return len(asked), await self.still_stopping(asked)

    async def still_stopping(self, job_ids: list[str]) -> int:
        """How many of these cancelled jobs have not confirmed it yet, after waiting a moment for
        them: a painting stops within a step, and "Cancelling…" beside "Cancelled." reads wrong."""
        deadline = time.monotonic() + CANCEL_CONFIRM_S
        while True:
            stopping = sum(j in self._cancel_requested for j in job_ids)
            if not stopping or time.monotonic() >= deadline:
                return stopping
            await asyncio.sleep(0.05)

    @property
    def unreachable(self) -> bool:
        """Whether the queue is out of reach: a cancel then waits, and its painter may finish."""
        return self.executor.hold is Hold.UNREACHABLE

    @property
    def hold(self) -> Hold | None:
        """What keeps the queue from moving right now, if anything (``Executor.hold``)."""
        return self.executor.hold

    async def queue_of(self, user_id: int, chat_id: int | None = None) -> list[tuple[JobRow, int | None, float | None]]:
        """The user's active jobs (in ``chat_id`` only, if given) with their place (0 = painting now)
        and a time estimate.

        Under a ``hold`` the queued ones' estimates are guesses: the caller says what
        holds them instead.
        """
        typical = await self.db.typical_seconds() or 30.0
        out = []
        for job in await self.db.active_jobs(user_id, chat_id):
            if job.id in self._cancel_requested:
                continue  # "Cancelled" was said; it is only finishing its step
            position = await self.executor.position(job.id)
            eta = await self.executor.eta(job.id)
            if eta is None:
                eta = typical if position in (0, None) else (position + 0.5) * typical
            out.append((job, position, eta))
        return out

    # --- executor events ----------------------------------------------------------------------
    def _lock(self, job_id: str) -> asyncio.Lock:
        return self._job_locks.setdefault(job_id, asyncio.Lock())

    async def _on_event(self, event: JobEvent) -> None:
        """Record the event at once; Telegram calls go to background tasks so the executor never waits."""
        job_id = event.job_id
        if isinstance(event, JobQueued):
            self._status_update(job_id, texts.queued(event.position, event.eta_s, event.hold))
        elif isinstance(event, JobStarted):
            await self.db.update_job(job_id, only_if_status=("queued",), status="running", started_at=time.time())
            self._status_update(job_id, texts.painting(0.0, event.eta_s))
        elif isinstance(event, JobProgress):
            self._status_update(job_id, texts.painting(event.fraction, event.eta_s))
        elif isinstance(event, JobDone):
            await self._done(event)
        elif isinstance(event, JobFailed):
            if event.retryable and job_id not in self._retried:
                self._retried.add(job_id)
                self.spawn(self._retry(job_id, event.reason))
            else:
                await self._failed(job_id, event.reason)
        elif isinstance(event, JobCancelled) and job_id in self._cancel_requested:
            await self._cancelled(job_id)
            # otherwise the executor is shutting down: the row stays active and runs after a restart

    def _status_update(self, job_id: str, text: str) -> None:
        status = self._status.get(job_id)
        if job_id in self._cancel_requested and text not in texts.CANCELLING_TEXTS:
            return  # "Cancelling…" stands until the executor confirms: its progress or place no longer matter
        if status is not None:
            status.update(text)

    async def _done(self, event: JobDone) -> None:
        if event.job_id in self._cancel_requested:
            # "Cancelled" was said, and the painter finished before it heard (a cancel held back
            # while the queue was out of reach, or one that came with the last step): not sent.
            log.info("job %s finished after it was cancelled; not sending it", event.job_id)
            await self._cancelled(event.job_id)
            return
        path = self.config.results_dir / f"{event.job_id}.{'jpg' if event.format.upper() == 'JPEG' else 'png'}"
        try:
            await asyncio.to_thread(_write_atomic, path, event.image)
        except OSError as exc:  # a full disk, a lost volume: say so now rather than "Painting… 100%" for good
            log.error("job %s: could not store its result at %s: %s", event.job_id, path, exc)
            await self._failed(event.job_id, texts.RESULT_NOT_STORED)
            return
        changed = await self.db.update_job(
            event.job_id,
            only_if_status=ACTIVE,
            status="done",
            finished_at=time.time(),
            seconds=event.seconds,
            result_path=str(path),
        )
        if changed:
            log.info("job %s done in %.1f s", event.job_id, event.seconds)
            self.spawn(self.deliver(event.job_id))

    async def _failed(self, job_id: str, reason: str) -> None:
        changed = await self.db.update_job(
            job_id, only_if_status=ACTIVE, status="failed", finished_at=time.time(), error=reason
        )
        if changed:
            log.info("job %s failed: %s", job_id, reason)
            self.spawn(self._close_status(job_id, texts.failed(reason, too_slow=is_time_limit(reason))))

    async def _cancelled(self, job_id: str) -> None:
        changed = await self.db.update_job(job_id, only_if_status=ACTIVE, status="cancelled", finished_at=time.time())
        # Only now: until the row says cancelled, a request arriving meanwhile must not count it.
        self._cancel_requested.discard(job_id)
        if changed:
            log.info("job %s cancelled", job_id)
            self.spawn(self._close_status(job_id, texts.CANCELLED))
        await self.db.forget_cancel(job_id)

    async def _close_status(self, job_id: str, text: str | None) -> None:
        status = self._status.pop(job_id, None)
        if status is None:
            job = await self.db.get_job(job_id)
            if job is None or job.status_message_id is None:
                return
            status = StatusMessage(self, job_id, job.chat_id, job.status_message_id, "", _heading(job))
        await status.finish(text)

    async def chat_migrated(self, old_chat_id: int, new_chat_id: int) -> None:
        """A group became a supergroup (a new chat id): its jobs go on there.

        Telegram says so twice (a service message in each chat) and every call to
        the old id fails with the new one, so this may run more than once.
        """
        first = old_chat_id not in self._moved
        self._moved[old_chat_id] = new_chat_id
        moved = await self.db.move_chat(old_chat_id, new_chat_id)
        if first:
            log.info("chat %s became %s; %d job(s) moved with it", old_chat_id, new_chat_id, len(moved))
        # Every status message still in the old chat: a job recovered at start-up may have opened
        # its message there after the database had already moved it.
        for job_id, status in [(j, s) for j, s in self._status.items() if s.chat_id == old_chat_id]:
            job = await self.db.get_job(job_id)
            if job is None:
                continue
            message_id = await status.move_to(new_chat_id, texts.status_heading(job.user_name))
            if message_id is not None:
                await self.db.update_job(job_id, status_message_id=message_id)

    def moved_to(self, chat_id: int) -> int | None:
        """The supergroup a group became, if it was upgraded."""
        return self._moved.get(chat_id)

    def earlier_ids(self, chat_id: int) -> list[int]:
        """The ids a supergroup had as a basic group (its allow-list entry may name one)."""
        return [old for old, new in self._moved.items() if new == chat_id]

    async def user_blocked(self, job_id: str) -> None:
        """The user blocked the bot, or it was removed from the group: drop the job (and stop
        painting it); there is nowhere left to tell anyone."""
        job = await self.db.get_job(job_id)
        if job is None:
            return
        if job.chat_type == "private":
            log.warning("user %s blocked the bot; dropping job %s", job.user_id, job_id)
        else:
            log.warning("the bot may no longer post in chat %s (removed?); dropping job %s", job.chat_id, job_id)
        self._dropped.add(job_id)
        if job.status in ACTIVE:
            await self.db.update_job(
                job_id, only_if_status=ACTIVE, status="failed", finished_at=time.time(), error=texts.USER_BLOCKED
            )
            await self.executor.cancel(job_id)
        elif job.status == "done" and job.delivered_at is None:
            await self.db.update_job(job_id, status="failed", error=texts.USER_BLOCKED)
        status = self._status.pop(job_id, None)
        if status is not None:
            status.closed = True

    # --- delivery -----------------------------------------------------------------------------
    def result_markup(self, job: JobRow) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("➕ Stronger", callback_data=f"more:{job.id}"),
                    InlineKeyboardButton("➖ Weaker", callback_data=f"less:{job.id}"),
                ],
                [
                    InlineKeyboardButton("🎨 Another style", callback_data=f"other:{job.id}"),
                    InlineKeyboardButton("📄 Full size", callback_data=f"full:{job.id}"),
                ],
                [InlineKeyboardButton("↗ Share", switch_inline_query="")],
            ]
        )

    def caption_for(self, job: JobRow, *, mention: bool, shared: bool = False) -> str:
        """``shared``: for sending elsewhere with @bot, where the painting time means nothing."""
        settings = StyleSettings.from_dict(job.settings)
        width, height = _image_size(job.result_path)
        name = job.user_name or "you"
        who = None
        if mention:  # a negative id is a chat (an anonymous admin, a channel): no user to link to
            who = mention_html(job.user_id, name) if job.user_id > 0 else f"<b>{texts.esc(name)}</b>"
        return texts.result_caption(
            texts.style_name(job.style_preset), settings.strength, width, height, None if shared else job.seconds, who
        )

    async def deliver(self, job_id: str) -> None:
        """Send a finished job's photo; the job row records it, so this happens once."""
        if job_id in self._delivering:
            return
        self._delivering.add(job_id)
        try:
            async with self._lock(job_id):
                job = await self.db.get_job(job_id)
                if job is None or job.status != "done" or job.delivered_at is not None or not job.result_path:
                    return
                data = await asyncio.to_thread(Path(job.result_path).read_bytes)
                caption = self.caption_for(job, mention=job.chat_type != "private")
                as_photo = fits_a_photo(*_image_size(job.result_path), len(data))
                send = self.bot.send_photo if as_photo else self.bot.send_document
                try:
                    msg = await self._send_with_retries(
                        lambda: send(
                            job.chat_id,
                            data,
                            caption=caption,
                            reply_parameters=self._reply_to(job.content_message_id),
                            reply_markup=self.result_markup(job),
                            filename=f"{job.id}.jpg" if as_photo else self._file_name(job),
                            read_timeout=RESULT_READ_TIMEOUT_S,
                        ),
                        job_id,
                    )
                except ChatMigrated as exc:
                    # The group became a supergroup: the result goes to the new chat id.
                    if exc.new_chat_id == job.chat_id:
                        raise
                    await self.chat_migrated(job.chat_id, exc.new_chat_id)
                    self.spawn(self.deliver(job_id))
                    return
                if msg is None:
                    if await self._status_of(job_id) == "done":  # not sent now: try again later
                        self._deliver_later(job_id)
                    return
                self._redeliveries.pop(job_id, None)
                file_id = msg.photo[-1].file_id if msg.photo else ""
                recorded = await self.db.mark_delivered(
                    job_id,
                    file_id=file_id,
                    message_id=msg.message_id,
                    caption=self.caption_for(job, mention=False, shared=True),
                    user_id=job.user_id,
                )
                if not recorded:
                    log.error("job %s was delivered twice", job_id)
            await self._close_status(job_id, None)
        finally:
            self._delivering.discard(job_id)
            self._job_locks.pop(job_id, None)

    async def _send_with_retries(self, send: Callable[[], Awaitable[Message]], job_id: str) -> Message | None:
        """Send, riding out network blips; a blocked user drops the job, other refusals fail it."""
        for attempt in range(4):
            try:
                return await send()
            except Forbidden:
                await self.user_blocked(job_id)
                return None
            except RetryAfter as exc:  # the rate limiter gave up; wait once more ourselves
                await asyncio.sleep(_seconds(exc.retry_after))
            except BadRequest as exc:
                log.warning("job %s could not be delivered: %s", job_id, exc)
                await self.db.update_job(job_id, status="failed", error=f"delivery refused: {exc}")
                self.spawn(self._close_status(job_id, texts.failed(texts.DELIVERY_REFUSED)))
                return None
            except NetworkError as exc:
                log.info("delivery of job %s hit %s; retrying", job_id, exc)
                self._say_sending_delayed(job_id)
                await asyncio.sleep(1.5 * (attempt + 1))
        return None

    async def _status_of(self, job_id: str) -> str | None:
        job = await self.db.get_job(job_id)
        return job.status if job is not None else None

    def _deliver_later(self, job_id: str) -> None:
        """Telegram was unreachable for a while: try again with a growing pause, not only at the next start."""
        if not self._started:  # stopping: the next start's recovery delivers it
            return
        tries = self._redeliveries.get(job_id, 0) + 1
        self._redeliveries[job_id] = tries
        delay = min(REDELIVERY_MAX_S, REDELIVERY_FIRST_S * 2 ** (tries - 1))
        log.warning("job %s not delivered now; trying again in %.0f s", job_id, delay)
        self._say_sending_delayed(job_id)

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._started:
                self.spawn(self.deliver(job_id))

        self._timer(later())

    def _say_sending_delayed(self, job_id: str) -> None:
        """Once a send has failed: not "Painting… 100%" with a Cancel button that can't cancel,
        for what may be many minutes.  (Once: the next is the delivery, which deletes it.)"""
        if (status := self._status.pop(job_id, None)) is not None:
            self.spawn(status.finish(texts.SENDING_DELAYED))

    @staticmethod
    def _file_name(job: JobRow) -> str:
        """What a result sent as a file is saved as on the user's device."""
        return f"{job.style_preset or 'own-style'}-{job.id[:8]}.jpg"

    @staticmethod
    def has_full_size(job: JobRow) -> bool:
        """Whether the full-size file can still be sent (results are kept NST_KEEP_RESULTS_DAYS)."""
        return bool(job.document_file_id) or bool(job.result_path and Path(job.result_path).is_file())

    async def send_full_size(self, job: JobRow, reply_to: int | None) -> bool:
        """The result as an uncompressed document (re-sent by file id after the first time)."""
        if job.document_file_id:
            document: Any = job.document_file_id
        elif job.result_path and Path(job.result_path).is_file():
            document = await asyncio.to_thread(Path(job.result_path).read_bytes)
        else:
            return False
        msg = await self.bot.send_document(
            job.chat_id,
            document,
            filename=self._file_name(job),
            reply_parameters=self._reply_to(reply_to),
            disable_content_type_detection=True,
        )
        if msg.document is not None and not job.document_file_id:
            await self.db.update_job(job.id, document_file_id=msg.document.file_id)
        return True

    # --- restart recovery -----------------------------------------------------------------
    async def recover(self) -> None:
        """Deliver what finished but was not sent, and queue again what was queued or running."""
        try:
            await self._recover()
        finally:
            self._recovered.set()

    async def _recover(self) -> None:
        for job in await self.db.undelivered_done():
            if job.result_path and Path(job.result_path).is_file():
                self.spawn(self.deliver(job.id))
            else:
                await self.db.update_job(job.id, status="queued")
        # Only what the last run left: jobs queued since this start are the executor's already.
        jobs = [j for j in await self.db.jobs_with_status(ACTIVE) if j.created_at < self._started_at]
        if jobs:
            log.info("re-queueing %d job(s) left from the last run", len(jobs))
        for job in jobs:
            try:
                if job.id in self._cancel_requested:  # asked for before a crash, never confirmed
                    await self.executor.cancel(job.id)  # a remote painter may be on it still
                    await self._cancelled(job.id)
                    continue
                await self._recover_job(job)
            except Exception:  # one job's trouble (a timeout, a lost file) must not strand the others
                log.exception("job %s could not be recovered", job.id)

    async def _retry(self, job_id: str, reason: str) -> None:
        """Submit a job again whose failure was not its own (see ``JobFailed.retryable``)."""
        job = await self.db.get_job(job_id)
        if job is None or job.status not in ACTIVE:
            return
        if job_id in self._cancel_requested:  # cancelled while the queue was out of reach
            await self._cancelled(job_id)
            return
        log.warning("job %s: %s; submitting it again", job_id, reason)
        try:
            await self._recover_job(job, texts.REQUEUED_WHILE_PAINTING if job.status == "running" else texts.REQUEUED)
        except Exception:
            log.exception("job %s could not be submitted again", job_id)
            await self._failed(job_id, reason)

    async def _recover_job(self, job: JobRow, status_text: str = texts.RESTARTED) -> None:
        if not await self.db.update_job(job.id, only_if_status=ACTIVE, status="queued", started_at=None):
            return  # cancelled (or failed) since the list was read
        try:
            content = await self.download(ImageRef(job.content_file_id, job.content_message_id))
            style = await self.download(ImageRef(job.style_file_id, None)) if job.style_file_id else None
        except RequestError as exc:
            await self._failed(job.id, "I couldn't fetch your pictures again")
            log.warning("job %s could not be recovered: %s", job.id, exc)
            return
        if await self._status_of(job.id) != "queued":
            return  # cancelled while its pictures were downloading
        job.status = "queued"
        if status_text == texts.RESTARTED and await self.executor.position(job.id) == 0:
            status_text = texts.STILL_PAINTING  # a remote worker painted on through the restart
        await self._open_status(job, status_text)
        await self._hand_over(job, content, style, recovering=True)

    async def _prune_every(self, interval_s: float) -> None:
        """Old full-size files go at every start and then periodically: a bot may run for months."""
        while True:
            removed = await asyncio.to_thread(self._prune_results)
            if removed:
                log.info("removed %d result file(s) older than %g days", removed, self.config.keep_results_days)
            await asyncio.sleep(interval_s)

    def _prune_results(self) -> int:
        """Full-size files are kept a while for the "Full size" button, not forever."""
        cutoff = time.time() - self.config.keep_results_days * 86400
        removed = 0
        for path in self.config.results_dir.glob("*.*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    # --- admin ------------------------------------------------------------------------------
    async def stats_text(self) -> str:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        stats = await self.db.stats(midnight)
        return texts.stats_text(
            stats.queued,
            stats.running,
            stats.done_today,
            stats.failed_today,
            stats.avg_seconds,
            self.executor.device,
            await self.executor.queue_length(),
            self.executor.hold,
            await self.executor.painters(),
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a half-written file on a full disk helps nobody
        raise


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the file header alone (no decoding), or None if unreadable."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Exception:  # open_image gives the proper message for anything unreadable
        return None


def fits_a_photo(width: int, height: int, size_bytes: int) -> bool:
    """Whether Telegram takes this picture as a photo (the Bot API's sendPhoto limits: 10 MB,
    width + height at most 10000, sides at most 20:1).  A picture painted from a long, thin
    photo can be thinner than that (its short side is raised to what the network needs), and
    a photo Telegram refuses fails the job after all the painting: such a picture goes as a file."""
    return size_bytes <= 10 * 2**20 and 0 < width + height <= 10000 and max(width, height) <= 20 * min(width, height)


def _image_size(path: str | None) -> tuple[int, int]:
    if not path:
        return (0, 0)
    try:
        from PIL import Image

        with Image.open(path) as img:
            return img.size
    except OSError:
        return (0, 0)


def _seconds(value: object) -> float:
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())  # type: ignore[union-attr]
    return float(value)  # type: ignore[arg-type]
