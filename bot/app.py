"""``build_application``: the one place a configured bot is assembled.

``__main__`` and the tests both call it, so whatever a test proves about the bot
(pointed at a fake Bot API server through ``TELEGRAM_BASE_URL``) holds for the
real one.  The service (database + executor) starts and stops with the
Application itself, so ``async with app`` / ``run_polling`` / ``run_webhook``
all bring it up and down in the right order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Awaitable
from typing import Any

from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import Application, BaseUpdateProcessor, Defaults

from bot import handlers, texts
from bot.config import BotConfig
from bot.db import Database
from bot.jobs import JobService
from bot.rate_limit import RepliesFirstRateLimiter
from nst_core import presets
from nst_core.executor import Executor

log = logging.getLogger(__name__)

# PTB 22 still hands out time periods (a flood's retry_after, say) as int seconds
# and warns on every read that the next major version makes them timedeltas.  We
# take the timedeltas now: the code reads either, and the warnings go away.
os.environ.setdefault("PTB_TIMEDELTA", "true")


class PerUserUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across users, in order within one (chat, user).

    Concurrency keeps a slow download from blocking everyone else; ordering per
    (chat, user) keeps one person's "photo, then style" from racing itself.
    """

    def __init__(self, max_concurrent_updates: int = 64) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[tuple[int | None, int | None], asyncio.Lock] = {}
        self._users: collections.Counter[tuple[int | None, int | None]] = collections.Counter()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key: tuple[int | None, int | None] = (None, None)
        if isinstance(update, Update):
            chat, user = update.effective_chat, update.effective_user
            key = (chat.id if chat else None, user.id if user else None)
        if key == (None, None):
            await coroutine
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                await coroutine
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]
                self._locks.pop(key, None)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class StyleBotApplication(Application):
    """An Application whose start-up opens the database and executor, and whose stop keeps jobs."""

    async def initialize(self) -> None:
        if self._initialized:  # run_polling after `async with app` must not open things twice
            return
        await super().initialize()
        db: Database = self.bot_data["db"]
        await db.open()
        await self.bot_data["service"].start(self.bot)
        presets.fetch_missing_in_background()  # the gallery and local jobs need the files
        await register_commands(self)

    async def stop(self) -> None:
        await super().stop()
        await self.bot_data["service"].stop()

    async def shutdown(self) -> None:
        await self.bot_data["service"].stop()  # no-op if stop() already ran
        await super().shutdown()
        await self.bot_data["db"].close()


async def register_commands(app: Application) -> None:
    """The command menu; a failure is logged, never fatal (the bot works without a menu)."""
    try:
        await app.bot.set_my_commands([BotCommand(name, desc) for name, desc in texts.COMMANDS])
    except TelegramError as exc:
        log.warning("could not set the command menu: %s", exc)


def quiet_http_logs() -> None:
    """httpx logs every request URL at INFO, and Bot API URLs contain the token."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def default_executor(config: BotConfig) -> Executor:
    """In-process by default; ``NST_EXECUTOR=celery`` sends jobs through Redis to ``nst-worker``s."""
    if config.executor == "celery":
        from nst_core.celery_executor import CeleryExecutor

        return CeleryExecutor(config.redis_url, timeout_s=config.job_timeout_s)
    from nst_core.executor import LocalExecutor

    if config.cpu_bf16 is not None:  # the engine reads the process environment; .env may have set it
        os.environ["NST_CPU_BF16"] = "1" if config.cpu_bf16 else "0"
    if not config.cuda_graphs:
        os.environ["NST_CUDA_GRAPHS"] = "0"
    return LocalExecutor(
        None if config.device == "auto" else config.device,
        timeout_s=config.job_timeout_s,
        threads=config.torch_threads,
    )


def build_application(config: BotConfig, executor: Executor | None = None) -> Application:
    """The whole bot from its configuration; ``executor`` defaults to the in-process one."""
    quiet_http_logs()
    # nst_core.presets reads the process environment, which a .env file does not touch.
    for name, value in (("NST_PRESET_DIR", config.preset_dir), ("NST_PRESET_SOURCE_DIR", config.preset_source_dir)):
        if value is not None:
            os.environ[name] = str(value)
    builder = (
        Application.builder()
        .application_class(StyleBotApplication)
        .token(config.token.get_secret_value())
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .rate_limiter(RepliesFirstRateLimiter(max_retries=config.flood_retries))
        .concurrent_updates(PerUserUpdateProcessor(64))
        .connection_pool_size(64)
        .connect_timeout(10)
        .read_timeout(15)
        .write_timeout(30)
        .media_write_timeout(60)
        .pool_timeout(10)
        .get_updates_read_timeout(35)
    )
    if config.base_url:
        builder = builder.base_url(config.base_url)
    if config.base_file_url:
        builder = builder.base_file_url(config.base_file_url)
    app = builder.build()
    db = Database(config.db_path)
    app.bot_data["config"] = config
    app.bot_data["db"] = db
    app.bot_data["service"] = JobService(config, db, executor or default_executor(config))
    handlers.register(app)
    return app
