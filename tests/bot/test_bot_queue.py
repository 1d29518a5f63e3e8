"""/cancel, /queue, the per-user and global limits, and /stats."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
import time

from bot_helpers import (
    BotRunner,
    FakeTelegram,
    answers,
    chat_of,
    image_bytes,
    msg_id,
    one_painting,
    param,
    photo_requests,
    reply_to,
    settle,
    text_of,
    wait_photo,
    wait_text,
    wait_until,
)

from nst_core.executor import LocalExecutor

#: Enough steps that a job is still running when the test cancels it (each step is ~0.05-0.2 s).
LONG = (400,)


def _minutes(text: str, before: str) -> int:
    """The time after ``before`` in a message ("about 2 min", "about 40 s"), in whole minutes."""
    match = re.search(re.escape(before) + r" (\d+) (min|s)\b", text)
    assert match, text
    number, unit = int(match[1]), match[2]
    return number if unit == "min" else math.ceil(number / 60)


def find_button_data(message: dict) -> str:
    return message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]


def slow_executor() -> LocalExecutor:
    return LocalExecutor("cpu", timeout_s=120, steps=LONG)


async def test_cancel_running_and_queued_jobs(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    tg.send_photo(chat, alice, image_bytes(seed=2), caption="great-wave")
    await wait_text(tg, chat["id"], "You're next in the queue")

    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "Your pictures")
    assert "The Starry Night — painting now" in text_of(queue)
    assert "Great Wave — next in the queue" in text_of(queue)  # as its status message says
    # A question while they paint got "I need a photo to paint".
    tg.send_text(chat, alice, "how long will it take?")
    (nudge,) = await wait_text(tg, chat["id"], "/queue says how far along")
    assert "I need a photo" not in text_of(nudge)

    started = time.monotonic()
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Cancelled 2 pictures")
    await wait_text(tg, chat["id"], "Cancelled.", method="editMessageText", count=2)
    assert time.monotonic() - started < 10  # the running job stopped within a few steps
    await settle(0.5)
    assert photo_requests(tg, chat["id"]) == []

    tg.send_text(chat, alice, "/queue")
    await wait_text(tg, chat["id"], "nothing in the works")
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "nothing in the works to cancel")

    # A photo waiting for its style is dropped too: the next picture became its style.
    tg.send_photo(chat, alice, image_bytes(seed=3))
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo that was waiting")
    fresh = tg.send_photo(chat, alice, image_bytes(seed=4))
    *_, ask = await wait_text(tg, chat["id"], "pick a style", count=2)
    assert reply_to(ask) == msg_id(fresh)  # a new photo, asked for its style, not painted as one
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo", count=2)
    tg.send_text(chat, alice, "great-wave")  # no photo is waiting now, so none is painted
    await wait_text(tg, chat["id"], "now send me the photo")
    await settle(1.0)
    assert photo_requests(tg, chat["id"]) == []


async def test_cancel_keeps_a_style_named_for_the_next_photo_and_says_so(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """/cancel stopped the pictures and silently kept the style named for the next photo, which
    then painted it: it says so, as it does for a waiting photo, and a second /cancel forgets it."""
    runner.overrides.update(draft_ttl_s=0.5)
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    await asyncio.sleep(1.0)  # the photo's draft is stale: a name now is for the next photo
    tg.send_text(chat, alice, "the kiss")
    await wait_text(tg, chat["id"], "<b>The Kiss</b> it is")
    tg.send_text(chat, alice, "/cancel")
    (said,) = await wait_text(tg, chat["id"], "Cancelled 1 picture")
    assert "<b>The Kiss</b> still waits for your next photo" in text_of(said)
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "forgot the style you picked")


async def test_cancel_button_on_the_status_message(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    first = tg.send_photo(chat, alice, image_bytes(), caption="the-kiss")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    # A queued one is cancelled at once: its pop-up said "Cancelling…" beside its "Cancelled." status.
    second = tg.send_photo(chat, alice, image_bytes(seed=2), caption="the-scream")
    await wait_text(tg, chat["id"], "You're next in the queue", count=2)  # the first one's said it too

    def cancel_under(photo: dict) -> tuple[dict, str]:
        status = next(
            m
            for m in tg.messages(chat["id"])
            if (m.get("reply_to_message") or {}).get("message_id") == msg_id(photo) and m.get("reply_markup")
        )
        return status, status["reply_markup"]["inline_keyboard"][0][0]["callback_data"]

    status, data = cancel_under(second)
    tg.press_button(status, alice, data)
    await wait_until(lambda: "Cancelled. ✋" in answers(tg), timeout=10, what=f"'Cancelled' among {answers(tg)}")
    # A painting one stops within a step: the pop-up waits for that, so it said "Cancelling…"
    # and a moment later the status "Cancelled.".
    message, data = cancel_under(first)
    tg.press_button(message, alice, data)
    await wait_until(lambda: answers(tg).count("Cancelled. ✋") == 2, timeout=10, what="a second 'Cancelled'")
    assert "Cancelling…" not in answers(tg)
    await wait_text(tg, chat["id"], "Cancelled.", method="editMessageText", count=2)
    # Pressing it again, on a cancelled job, is answered, not ignored (it said "already finished").
    tg.press_button(message, alice, data)
    await tg.wait_for("answerCallbackQuery", lambda r: "already cancelled" in text_of(r))


async def test_per_user_limit_and_global_queue_cap(tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict) -> None:
    runner.overrides.update(max_jobs_per_user=2, max_queue=3)
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    for seed in range(3):
        tg.send_photo(chat, alice, image_bytes(seed=seed), caption="starry-night")
    await wait_text(tg, chat["id"], "You already have 2 pictures in the works")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")  # warmed up: real times from here

    carol = tg.user(303, "Carol")
    tg.send_photo(tg.private_chat(bob), bob, image_bytes(), caption="great-wave")
    await wait_text(tg, bob["id"], "In the queue")
    tg.send_photo(tg.private_chat(carol), carol, image_bytes(), caption="great-wave")
    (busy,) = await wait_text(tg, carol["id"], "very busy")
    # Room comes when the first picture in the works is done, well before Bob's, the last,
    # is ready.  (It used to say the whole queue's time: three typical pictures.)
    tg.send_text(tg.private_chat(bob), bob, "/queue")
    (bobs,) = await wait_text(tg, bob["id"], "Your pictures")
    assert _minutes(text_of(busy), "try again in about") <= _minutes(text_of(bobs), "ready in about")
    # Alice's two jobs are untouched by the refusals.
    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "Your pictures")
    assert text_of(queue).count("Starry Night") == 2
    assert "(strength" not in text_of(queue)  # the same strength tells nothing apart: their places do


async def test_queue_tells_two_pictures_of_one_style_apart(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    tg.send_text(chat, alice, "/strength 8")
    await wait_text(tg, chat["id"], "Strength set to 8")
    tg.send_photo(chat, alice, image_bytes(seed=2), caption="starry-night")
    await wait_text(tg, chat["id"], "You're next in the queue")
    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "Your pictures")
    assert "1. The Starry Night (strength 5) — painting now" in text_of(queue)
    assert "2. The Starry Night (strength 8) — next in the queue" in text_of(queue)
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Cancelled 2 pictures")


async def test_a_refused_style_picture_is_not_called_the_kept_photo(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """The refusal said "I've kept this photo" under the style picture: users took it for a photo in line."""
    chat = await one_painting(tg, runner, alice, max_jobs_per_user=1)
    photo = tg.send_photo(chat, alice, image_bytes(seed=2))
    await wait_text(tg, chat["id"], "Now pick a style")
    style = tg.send_photo(chat, alice, image_bytes(seed=3))
    (refused,) = await wait_text(tg, chat["id"], "You already have 1 picture")
    assert reply_to(refused) == msg_id(style)
    assert "kept your photo from before this picture" in text_of(refused)
    assert "kept this photo" not in text_of(refused)

    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Cancelled 1 picture")
    tg.send_photo(chat, alice, image_bytes(seed=3))  # at once, as the refusal said: the picture again
    # The new job's status message replies to the photo it paints.
    await tg.wait_for("sendMessage", lambda r: "queue" in text_of(r) and reply_to(r) == msg_id(photo))


async def test_a_queue_position_that_changes_during_an_edit_is_still_shown(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """A change that came while the previous edit was on its way waited for the next event: after a
    restart a picture read "In the queue: #2" while it was next, for the whole of the painting before it."""
    runner.overrides.update(max_jobs_per_user=4)
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(3000,)))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=0), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    for seed, style in enumerate(("great-wave", "the-kiss", "the-scream"), start=1):
        tg.send_photo(chat, alice, image_bytes(seed=seed), caption=style)
        await wait_text(tg, chat["id"], "queue", count=seed + 1)
    status = sorted((m for m in tg.messages(chat["id"]) if "reply_markup" in m), key=lambda m: m["message_id"])
    _, second, third, last = status
    assert "In the queue: #3" in last["text"]

    held = tg.hold("editMessageText", "#2")  # the last one's move up answers slowly...
    tg.press_button(second, alice, find_button_data(second))
    await asyncio.wait_for(held.reached.wait(), 10)
    tg.press_button(third, alice, find_button_data(third))  # ...and meanwhile it is next
    await tg.wait_for("answerCallbackQuery", lambda r: True, count=2)
    await settle(0.5)
    held.release()
    await tg.wait_for(
        "editMessageText",
        lambda r: int(param(r, "message_id")) == last["message_id"] and "You're next" in text_of(r),
        timeout=5,
    )


async def test_stats_is_for_admins_only(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/stats")
    await wait_text(tg, chat["id"], "for the bot's admins")

    admin = tg.user(42, "Ada")
    admin_chat = tg.private_chat(admin)
    tg.send_photo(admin_chat, admin, image_bytes(), caption="great-wave")
    await wait_photo(tg, admin_chat["id"])
    tg.send_text(admin_chat, admin, "/stats")
    (stats,) = await wait_text(tg, admin_chat["id"], "Stats")
    text = text_of(stats)
    assert "Today: 1 done, 0 failed" in text and "Device: cpu" in text and "Average job time today" in text


async def test_status_edits_are_throttled_and_only_on_change(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    runner.overrides.update(status_interval_s=1.0)
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(60,)))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    await wait_photo(tg, chat["id"], timeout=60)
    edits = [r for r in tg.calls("editMessageText") if chat_of(r) == chat["id"]]
    assert any("Painting…" in text_of(r) for r in edits)
    for before, after in itertools.pairwise(edits):
        assert text_of(before) != text_of(after)
        assert after.at - before.at >= 0.9


async def test_job_timeout_is_reported(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    await runner.start(LocalExecutor("cpu", timeout_s=1.0, steps=LONG))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (failed,) = await wait_text(tg, chat["id"], "couldn't paint this one", method="editMessageText", timeout=30)
    assert "longer than the 1 s limit" in text_of(failed)
    assert "A smaller /size or a faster /quality" in text_of(failed) and "settings" not in text_of(failed)
    tg.send_text(chat, alice, "/queue")
    await wait_text(tg, chat["id"], "nothing in the works")


async def test_a_photo_sent_while_the_bot_warms_up_gets_no_made_up_time(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """A photo sent just after start-up said "Ready in about 30 s", a guess from before the
    device was timed, then "about 2 min" a few seconds later."""
    executor = LocalExecutor("cpu", timeout_s=60)
    held = threading.Event()
    executor._pool.submit(held.wait)  # the worker thread reaches the warm-up when the test says so
    try:
        await runner.start(executor)
        chat = tg.private_chat(alice)
        tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
        (status,) = await wait_text(tg, chat["id"], "You're next in the queue")
        assert "warming up" in text_of(status) and "about" not in text_of(status)
        tg.send_text(chat, alice, "/queue")
        (queue,) = await wait_text(tg, chat["id"], "Your pictures")
        assert "how long follows" in text_of(queue) and "about" not in text_of(queue)
    finally:
        held.set()
    (painting,) = await wait_text(tg, chat["id"], "Painting…", method="editMessageText", timeout=60)
    assert "left" in text_of(painting)  # the time, now this machine's
    await wait_photo(tg, chat["id"], timeout=60)
