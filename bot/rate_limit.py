"""Telegram's flood limits: the bot's answers ahead of its progress reports, one chat's flood its own.

Telegram lets a bot send about 20 messages a minute to one group.  PTB's
``AIORateLimiter`` queues every call to a group in order, so in a busy group a
``/queue`` reply or a finished picture waited behind status edits that were
stale by the time they went.  Here a call marked ``SKIPPABLE`` (a status edit)
goes only while a quarter of the group's budget is still free; otherwise it is
refused at once with ``Skipped`` and the status message tries again later.

PTB also answers any flood error (HTTP 429, ``RetryAfter``) by pausing *every*
request of the bot for the retry time, so one busy group hitting its limit held
back other users' replies and pictures by as long as Telegram asked that group
to wait.  Telegram's 429s on calls for a chat are mostly that chat's own limit,
so here such a 429 holds back only that chat: its later calls wait until the
flood is over and the failed call is retried then (up to ``max_retries``, as
PTB does), while other chats carry on.  A 429 on a call without a chat is a
limit on the whole bot and still pauses everything, as in PTB.  In a group a
skippable call is refused with ``Skipped`` rather than wait out a flood.  A
private chat's status edit waits like its other calls: with no pause between
edits (``status_interval_s`` 0) the status message would retry a refusal at once,
over and over, without letting anything else run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import RetryAfter, TelegramError
from telegram.ext import AIORateLimiter

log = logging.getLogger(__name__)

#: ``rate_limit_args`` for a call that may be put off rather than queued.
SKIPPABLE = -1

Result = bool | dict[str, Any] | list[dict[str, Any]]


class Skipped(TelegramError):
    """A skippable call put off: the group's budget is nearly spent, or the group is waiting out a flood."""

    def __init__(self, why: str = "the group's message budget is kept for replies") -> None:
        super().__init__(f"put off: {why}")


class _ChatFlooded(Exception):
    """Carries a chat's ``RetryAfter`` past PTB's own handler, which would pause every chat for it."""

    def __init__(self, error: RetryAfter) -> None:
        super().__init__(str(error))
        self.error = error


def _chat_key(chat_id: Any) -> int | str | None:
    """The chat a call is for, as PTB's limiter keys it (a numeric string counts as its number)."""
    if chat_id is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return int(chat_id)
    return str(chat_id)


def _is_group(chat: int | str) -> bool:
    """Groups and channels: negative ids, or an ``@username`` (which only those have)."""
    return isinstance(chat, str) or chat < 0


class RepliesFirstRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` that keeps part of each group's budget for replies and holds back only a flooded chat."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Chat -> time.monotonic() at which its flood is over.
        self._flooded_until: dict[int | str, float] = {}

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Result:
        skippable = rate_limit_args == SKIPPABLE
        if skippable:
            rate_limit_args = None
        chat = _chat_key(data.get("chat_id"))
        if chat is None:  # no chat: a 429 here is the bot's, and PTB pauses every request for it
            return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
        put_off = skippable and _is_group(chat)
        if put_off:
            if self._flood_left(chat) > 0:
                raise Skipped("the group is waiting out Telegram's flood control")
            # PTB's own per-group limiter (a leaky bucket), asked whether a quarter of it is free.
            if isinstance(chat, int) and self._group_max_rate:
                limiter = self._get_group_limiter(chat)
                if not limiter.has_capacity(1 + self._group_max_rate / 4):
                    raise Skipped

        async def send(*call_args: Any, **call_kwargs: Any) -> Result:
            """The HTTP call, made once this chat's flood (if any) is over; its own 429 kept from PTB."""
            while (left := self._flood_left(chat)) > 0:
                if put_off:
                    raise Skipped("the group is waiting out Telegram's flood control")
                await asyncio.sleep(left)
            try:
                return await callback(*call_args, **call_kwargs)
            except RetryAfter as exc:
                raise _ChatFlooded(exc) from exc

        # PTB still does the rest (its limiters, paid broadcasts, a bot-wide pause); only this retry loop is ours.
        max_retries = rate_limit_args or self._max_retries
        retries = 0
        while True:
            try:
                return await super().process_request(send, args, kwargs, endpoint, data, rate_limit_args)
            except _ChatFlooded as flooded:
                seconds = self._flood(chat, flooded.error)
                if put_off:
                    raise Skipped("the group is waiting out Telegram's flood control") from None
                if retries >= max_retries:
                    log.warning("chat %s: flood control, still hit after %d retries", chat, max_retries)
                    raise flooded.error from None
                retries += 1
                log.info("chat %s: flood control; its calls wait %.1f s, other chats go on", chat, seconds)

    def _flood_left(self, chat: int | str) -> float:
        """Seconds until this chat's flood is over; 0 when it is not waiting one out."""
        until = self._flooded_until.get(chat)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._flooded_until[chat]
            return 0.0
        return left

    def _flood(self, chat: int | str, error: RetryAfter) -> float:
        """Hold back this chat's calls for Telegram's retry time (plus PTB's 0.1 s); returns that time."""
        # PTB reads the private timedelta too: the public ``retry_after`` may be an int, a float or a timedelta.
        seconds = error._retry_after.total_seconds() + 0.1
        now = time.monotonic()
        for key, until in list(self._flooded_until.items()):  # floods are rare: drop the finished ones here
            if until <= now:
                del self._flooded_until[key]
        self._flooded_until[chat] = max(self._flooded_until.get(chat, 0.0), now + seconds)
        return seconds
