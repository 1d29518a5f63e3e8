"""The rate limiter keeps part of a busy group's budget for replies: status edits give way."""

from __future__ import annotations

import asyncio

import pytest

from bot.rate_limit import SKIPPABLE, RepliesFirstRateLimiter, Skipped


async def test_status_edits_give_way_to_replies_in_a_busy_group() -> None:
    """With the stock limiter a /queue reply waited behind every edit queued before it."""
    limiter = RepliesFirstRateLimiter(group_max_rate=8, group_time_period=60)
    sent: list[str] = []

    async def call(what: str) -> bool:  # stands for the HTTP request PTB would make
        sent.append(what)
        return True

    async def request(what: str, chat_id: int, skippable: bool) -> object:
        args = SKIPPABLE if skippable else None
        return await limiter.process_request(call, (what,), {}, what, {"chat_id": chat_id}, args)

    for _ in range(6):  # a fresh group's budget takes edits: 6 of 8, leaving a quarter
        await request("edit", -100, skippable=True)
    with pytest.raises(Skipped):
        await request("edit", -100, skippable=True)
    # The reserve: a reply and a result go at once rather than after a minute's wait.
    await asyncio.wait_for(request("reply", -100, skippable=False), 1)
    await asyncio.wait_for(request("result", -100, skippable=False), 1)
    assert sent == ["edit"] * 6 + ["reply", "result"]

    # Another group has its own budget, and a private chat has no per-chat one.
    await request("edit", -200, skippable=True)
    for _ in range(10):
        await request("edit", 5, skippable=True)
    assert len(sent) == 19
