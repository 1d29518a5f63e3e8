"""The rate limiter keeps part of a busy group's budget for replies: status edits give way."""

from __future__ import annotations

import asyncio
import time

import pytest
from telegram.error import RetryAfter

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


class FakeTelegram:
    """Stands for the HTTP call PTB makes: answers 429 to the calls it is told to (once each), logs the rest."""

    def __init__(self, floods: dict[str, int]) -> None:
        self.floods = floods  # call -> the retry_after its first try is answered with
        self.sent: list[str] = []
        self.at: dict[str, float] = {}
        self.flooded = asyncio.Event()

    async def call(self, what: str) -> bool:
        if what in self.floods:
            what, retry_after = f"{what} 429", self.floods.pop(what)
        self.sent.append(what)
        self.at[what] = time.monotonic()
        if what.endswith(" 429"):
            self.flooded.set()
            raise RetryAfter(retry_after)
        return True

    async def request(
        self, limiter: RepliesFirstRateLimiter, what: str, chat_id: int | None, skippable: bool = False
    ) -> object:
        data = {} if chat_id is None else {"chat_id": chat_id}
        args = SKIPPABLE if skippable else None
        return await limiter.process_request(self.call, (what,), {}, what, data, args)


async def test_a_flood_in_one_chat_holds_back_only_that_chat() -> None:
    """With the stock limiter a 429 in one busy group paused every chat's calls for its retry time."""
    telegram = FakeTelegram({"photo A": 2})
    limiter = RepliesFirstRateLimiter(max_retries=1)
    photo = asyncio.create_task(telegram.request(limiter, "photo A", -100))
    await telegram.flooded.wait()

    # While group A waits out its 2 s, another user's reply, another group's edit and a chat-less call go at once.
    await asyncio.wait_for(telegram.request(limiter, "help B", 5), 1)
    await asyncio.wait_for(telegram.request(limiter, "edit C", -200, skippable=True), 1)
    await asyncio.wait_for(telegram.request(limiter, "answer", None), 1)
    assert not photo.done()

    # A's photo is retried once the flood is over, and goes.
    assert await asyncio.wait_for(photo, 5) is True
    assert telegram.sent == ["photo A 429", "help B", "edit C", "answer", "photo A"]
    assert telegram.at["photo A"] - telegram.at["photo A 429"] >= 2


async def test_a_flooded_chat_waits_its_flood_out_and_a_group_skips_status_edits() -> None:
    """A chat's later calls wait until its flood is over; a group's status edit is put off instead."""
    telegram = FakeTelegram({"photo A": 2, "photo P": 2})
    limiter = RepliesFirstRateLimiter()  # no retries: the 429 goes to the caller, and the chat still waits
    for what, chat in (("photo A", -100), ("photo P", 7)):
        with pytest.raises(RetryAfter):
            await telegram.request(limiter, what, chat)

    # The group's status edit is refused at once rather than queued behind the flood (it tries again later).
    with pytest.raises(Skipped):
        await asyncio.wait_for(telegram.request(limiter, "edit A", -100, skippable=True), 1)
    # The group's reply and the private chat's edit (a refusal there could be retried at once, on and on) wait.
    await asyncio.wait_for(
        asyncio.gather(
            telegram.request(limiter, "reply A", -100),
            telegram.request(limiter, "edit P", 7, skippable=True),
        ),
        5,
    )
    assert sorted(telegram.sent) == ["edit P", "photo A 429", "photo P 429", "reply A"]
    assert telegram.at["reply A"] - telegram.at["photo A 429"] >= 2
    assert telegram.at["edit P"] - telegram.at["photo P 429"] >= 2


async def test_a_flood_without_a_chat_still_pauses_every_chat() -> None:
    """A 429 on a call without a chat is a limit on the whole bot: PTB's pause of everything stays."""
    telegram = FakeTelegram({"answer": 1})
    limiter = RepliesFirstRateLimiter(max_retries=1)
    answer = asyncio.create_task(telegram.request(limiter, "answer", None))
    await telegram.flooded.wait()
    await asyncio.wait_for(telegram.request(limiter, "help B", 5), 5)
    assert await answer is True
    assert telegram.at["help B"] - telegram.at["answer 429"] >= 1
