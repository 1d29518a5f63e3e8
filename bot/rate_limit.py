"""Telegram's flood limits, with the bot's answers ahead of its progress reports.

Telegram lets a bot send about 20 messages a minute to one group.  PTB's
``AIORateLimiter`` queues every call to a group in order, so in a busy group a
``/queue`` reply or a finished picture waited behind status edits that were
stale by the time they went.  Here a call marked ``SKIPPABLE`` (a status edit)
goes only while a quarter of the group's budget is still free; otherwise it is
refused at once with ``Skipped`` and the status message tries again later.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import TelegramError
from telegram.ext import AIORateLimiter

#: ``rate_limit_args`` for a call that may be put off rather than queued.
SKIPPABLE = -1


class Skipped(TelegramError):
    """A skippable call put off because the group's budget is nearly spent."""

    def __init__(self) -> None:
        super().__init__("put off: the group's message budget is kept for replies")


class RepliesFirstRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` that keeps part of each group's budget for everything but status edits."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if rate_limit_args == SKIPPABLE:
            rate_limit_args = None
            try:
                chat_id = int(data.get("chat_id"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                chat_id = 0
            # PTB's own per-group limiter (a leaky bucket), asked whether a quarter of it is free.
            if chat_id < 0 and self._group_max_rate:
                limiter = self._get_group_limiter(chat_id)
                if not limiter.has_capacity(1 + self._group_max_rate / 4):
                    raise Skipped
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
