"""When Telegram gets in the way: refused, failing and migrated deliveries, a bumpy restart, kept photos."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from bot_helpers import (
    BotRunner,
    FakeTelegram,
    answers,
    chat_of,
    find_button,
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

from bot import jobs
from nst_core.executor import LocalExecutor


def slow_executor() -> LocalExecutor:
    return LocalExecutor("cpu", timeout_s=120, steps=(400,))


async def test_a_refused_result_is_reported_on_the_status_message(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    chat = tg.private_chat(alice)
    tg.fail("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (closed,) = await wait_text(tg, chat["id"], "Telegram refused", method="editMessageText", timeout=30)
    assert "Sorry" in text_of(closed)
    assert not closed.params.get("reply_markup"), "the Cancel button of a finished job must go"


async def test_a_result_waits_out_a_telegram_outage(
    tg: FakeTelegram, bot: BotRunner, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four failed sends in a row used to leave the picture until the next restart."""
    monkeypatch.setattr(jobs, "REDELIVERY_FIRST_S", 0.5)
    chat = tg.private_chat(alice)
    tg.fail("sendPhoto", 502, "Bad Gateway", times=4)
    photo = tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    # Meanwhile the status no longer reads "Painting… 100%" with a Cancel button that can't cancel.
    (waiting,) = await wait_text(tg, chat["id"], "keep trying", method="editMessageText", timeout=60)
    assert "Painted" in text_of(waiting) and not waiting.params.get("reply_markup")
    tg.send_text(chat, alice, "/queue")  # it said "nothing in the works"
    (queue,) = await wait_text(tg, chat["id"], "Your pictures")
    assert "The Great Wave — painted; I'm sending it" in text_of(queue)
    tg.send_text(chat, alice, "great wave")  # asked again meanwhile: it was painted and sent twice
    await wait_text(tg, chat["id"], "already in the works")
    tg.send_text(chat, alice, "/cancel")  # "nothing in the works to cancel", beside /queue's list
    await wait_text(tg, chat["id"], "Nothing left to cancel: your picture is painted")
    (result,) = await wait_photo(tg, chat["id"], timeout=60)
    assert reply_to(result) == msg_id(photo)
    await settle(1.0)
    assert len([r for r in tg.calls("sendPhoto") if r.status == 200]) == 1
    assert not [m for m in tg.messages(chat["id"]) if "keep trying" in m.get("text", "")]  # gone once sent


async def test_a_result_telegram_is_slow_to_confirm_is_sent_once(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """Telegram showed the picture but answered after the bot's usual 15 s: it was sent again."""
    chat = tg.private_chat(alice)
    held = tg.hold("sendPhoto")
    tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    await asyncio.wait_for(held.reached.wait(), 60)
    await asyncio.sleep(17)
    held.release()
    await wait_until(lambda: bool(bot.service._status) is False, timeout=15, what="the status closed")
    await settle(1.0)
    assert len([m for m in tg.messages(chat["id"]) if m.get("photo")]) == 1


async def test_a_group_upgraded_to_a_supergroup_still_gets_its_result(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    group = tg.group_chat(-4001, "Painters")
    supergroup_id = -1004001
    tg.fail(
        "sendPhoto",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        chat_id=group["id"],
        parameters={"migrate_to_chat_id": supergroup_id},
    )
    tg.send_photo(group, alice, image_bytes(), caption="/stylize the-kiss")
    (result,) = await wait_photo(tg, supergroup_id, timeout=60)
    assert "The Kiss" in text_of(result)


async def test_a_group_upgraded_mid_job_keeps_its_status_queue_and_cancel_button(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """Upgrading gives the group a new id: /queue there used to miss the job, and its status went quiet."""
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(3000,)))  # still painting at the end
    group = tg.group_chat(-4002, "Painters", kind="group")
    tg.send_photo(group, alice, image_bytes(), caption="/stylize the-kiss")
    await wait_text(tg, group["id"], "Painting…", method="editMessageText")
    supergroup = tg.upgrade_group(group, alice, -1004002)

    # The old status message takes no more edits: the job goes on in a new one, which says whose it is.
    (moved,) = await wait_text(tg, supergroup["id"], "Painting…")
    assert "For <b>Alice</b>" in text_of(moved)
    await wait_text(tg, supergroup["id"], "For <b>Alice</b>", method="editMessageText")  # and it keeps moving
    tg.send_text(supergroup, alice, "/queue")
    (queue,) = await wait_text(tg, supergroup["id"], "Your pictures")
    assert "The Kiss — painting now" in text_of(queue)

    status, cancel_data = find_button(tg, supergroup["id"], "x:")
    tg.press_button(status, alice, cancel_data)
    (cancelled,) = await wait_text(tg, supergroup["id"], "Cancelled", method="editMessageText")
    assert int(param(cancelled, "message_id")) == status["message_id"]
    assert "For <b>Alice</b>" in text_of(cancelled)
    await settle(0.5)
    refused = [r for r in tg.requests if "chat_id" in r.params and chat_of(r) == group["id"] and r.status != 200]
    assert len(refused) <= 1, "one refused call at most (an edit in flight at the upgrade)"


async def test_anonymous_admins_keep_their_pictures_settings_and_access_through_an_upgrade(
    tg: FakeTelegram, runner: BotRunner
) -> None:
    """They post as the group, whose id the upgrade changes: their picture, settings and allow-list
    entry stayed behind with the old id ("nothing in the works", strength 5, "this bot is private")."""
    runner.overrides.update(allowed_user_ids=[-4003])
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(3000,)))  # still painting at the end
    group = tg.group_chat(-4003, "Family", kind="group")
    admins = tg.anonymous_admin(group)
    tg.send_text(group, admins, "/strength 9")
    await wait_text(tg, group["id"], "Strength set to 9")
    tg.send_photo(group, admins, image_bytes(), caption="/stylize the-kiss")
    await wait_text(tg, group["id"], "Painting…", method="editMessageText")
    supergroup = tg.upgrade_group(group, admins, -1004003)
    admins = tg.anonymous_admin(supergroup)
    await wait_text(tg, supergroup["id"], "For <b>Family</b>")

    tg.send_text(supergroup, admins, "/queue")
    (queue,) = await wait_text(tg, supergroup["id"], "Your pictures")
    assert "The Kiss — painting now" in text_of(queue)
    tg.send_text(supergroup, admins, "/settings")
    (panel,) = await wait_text(tg, supergroup["id"], "Settings for posts as Family")
    assert "Strength: 9 " in text_of(panel)
    tg.send_text(supergroup, admins, "/cancel")
    await wait_text(tg, supergroup["id"], "Cancelled 1 picture")


async def test_buttons_from_before_an_upgrade_say_so(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """They failed without a word: the bot posts where the button is, which the old chat refuses."""
    for old_id, announce in ((-4005, True), (-4006, False)):  # told of the upgrade, or only refused
        group = tg.group_chat(old_id, "Painters", kind="group")
        tg.send_photo(group, alice, image_bytes(), caption="/stylize great-wave")
        await wait_photo(tg, group["id"])
        result, stronger = find_button(tg, group["id"], "more:")
        _, other = find_button(tg, group["id"], "other:")
        supergroup = tg.upgrade_group(group, alice, old_id - 1000000000000, announce=announce)
        await settle(0.5)
        before = len(tg.requests)
        tg.press_button(result, alice, other)
        await tg.wait_for("answerCallbackQuery", lambda r: "upgraded to a supergroup" in text_of(r), count=1)
        tg.press_button(result, alice, stronger)
        await tg.wait_for("answerCallbackQuery", lambda r: "upgraded to a supergroup" in text_of(r), count=2)
        await settle(0.5)
        assert not [r for r in tg.requests[before:] if r.method.startswith("send") and r.status == 200]
        assert not photo_requests(tg, supergroup["id"])
        tg.requests.clear()  # the second group's answers are counted from none


async def test_an_upgrade_while_the_bot_was_stopped_moves_the_status_message_too(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """The job moved but its status stayed in the old chat, where every edit was refused."""
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(3000,)))
    group = tg.group_chat(-4007, "Painters", kind="group")
    tg.send_photo(group, alice, image_bytes(), caption="/stylize the-kiss")
    await wait_text(tg, group["id"], "Painting…", method="editMessageText")
    await runner.stop()
    supergroup = tg.upgrade_group(group, alice, -1004007)
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(3000,)))
    await wait_text(tg, supergroup["id"], "For <b>Alice</b>")
    status, cancel = find_button(tg, supergroup["id"], "x:")
    tg.press_button(status, alice, cancel)
    await wait_text(tg, supergroup["id"], "Cancelled", method="editMessageText")


async def test_a_refused_photo_is_the_one_the_next_style_paints(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    chat = await one_painting(tg, runner, alice, max_jobs_per_user=1)
    second = tg.send_photo(chat, alice, image_bytes(seed=2), caption="great-wave")
    (refused,) = await wait_text(tg, chat["id"], "You already have 1 picture")
    assert "kept this photo" in text_of(refused)

    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Cancelled", method="editMessageText")
    (cancelled,) = await wait_text(tg, chat["id"], "Cancelled 1 picture")
    assert "still waits for its style" in text_of(cancelled)  # the kept photo is not dropped with the job
    tg.send_text(chat, alice, "/style the-scream")
    *_, status = await wait_text(tg, chat["id"], "queue", count=2)  # the first job's, then the new one's
    assert reply_to(status) == msg_id(second), "the new job must paint the refused photo, not the first one"


async def test_restart_recovery_goes_on_when_one_status_message_cannot_be_edited(
    tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict
) -> None:
    await runner.start(slow_executor())
    alice_chat, bob_chat = tg.private_chat(alice), tg.private_chat(bob)
    tg.send_photo(alice_chat, alice, image_bytes(seed=1), caption="starry-night")
    # One after the other: sent together, the two chats' updates race and Bob's job may start first.
    await wait_text(tg, alice_chat["id"], "Painting…", method="editMessageText")
    tg.send_photo(bob_chat, bob, image_bytes(seed=2), caption="great-wave")
    await wait_text(tg, bob_chat["id"], "queue")
    await runner.stop()

    # Alice's old status message cannot be edited after the restart (a Telegram hiccup).
    tg.fail("editMessageText", 502, "Bad Gateway", chat_id=alice_chat["id"], times=5)
    await runner.start()
    await wait_photo(tg, alice_chat["id"], timeout=60)
    await wait_photo(tg, bob_chat["id"], timeout=60)


async def test_old_result_files_are_removed_while_the_bot_runs(
    tg: FakeTelegram, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only at start: a bot runs for months."""
    monkeypatch.setattr(jobs, "PRUNE_INTERVAL_S", 0.2)
    runner.overrides.update(keep_results_days=1)
    await runner.start()
    results = runner.data_dir / "results"
    old, fresh = results / "old.jpg", results / "fresh.jpg"
    for path in (old, fresh):
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    await wait_until(lambda: not old.exists(), timeout=10, what="the old file to go")
    assert Path(fresh).exists()


async def test_a_cancel_pressed_while_a_restart_requeues_the_job_stops_it(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """After a restart the old status message, and its Cancel button, are live again at once.

    A press while the bot was still putting the job back in the queue used to be
    answered with "Cancelled", and the job was queued anyway: it painted, and its
    status message moved on to "Painting…" after saying "Cancelled".
    """
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    await runner.stop()

    held = tg.hold("editMessageText", "I restarted")
    executor = slow_executor()
    await runner.start(executor)
    await asyncio.wait_for(held.reached.wait(), 15)
    status = held.result
    (cancel_data,) = [b["callback_data"] for row in status["reply_markup"]["inline_keyboard"] for b in row]
    tg.press_button(status, alice, cancel_data)
    await wait_until(lambda: bool(answers(tg)), what="the Cancel press to be answered")
    held.release()

    await wait_text(tg, chat["id"], "Cancelled", method="editMessageText")
    await settle(1.5)
    restarted_at = next(i for i, r in enumerate(tg.calls("editMessageText", chat["id"])) if "I restarted" in text_of(r))
    edits = [text_of(r) for r in tg.calls("editMessageText", chat["id"])[restarted_at:]]
    assert not [t for t in edits if "Painting" in t], f"a cancelled job must not paint: {edits}"
    assert await executor.queue_length() == 0
    (shown,) = [m for m in tg.messages(chat["id"]) if m["message_id"] == status["message_id"]]
    assert "Cancelled" in shown["text"] and not shown.get("reply_markup")


async def test_a_picture_cancelled_just_before_a_stop_stays_cancelled_after_the_restart(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """The stop interrupted the painting before it confirmed the cancel, so the row still said
    running: the next start put it back in the queue, painted it and sent it."""
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    (job,) = await runner.service.db.jobs_with_status(("running",))
    assert await runner.service.cancel(job.id)  # "Cancelling…": it stops at its next step...
    await runner.stop()  # ...but the bot stops first
    (closed,) = await wait_text(tg, chat["id"], "Cancelled", method="editMessageText")
    assert not closed.params.get("reply_markup")

    await runner.start(slow_executor())
    await settle(2.0)
    assert (await runner.service.db.get_job(job.id)).status == "cancelled"
    edits = [text_of(r) for r in tg.calls("editMessageText", chat["id"])]
    assert not any("I restarted" in t for t in edits), edits
    assert not [m for m in tg.messages(chat["id"]) if m.get("photo")]


async def test_after_a_restart_a_new_picture_queues_behind_the_ones_left_from_before(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """Pictures are put back in line one by one (each fetched from Telegram again), and a photo
    sent meanwhile went to the painter first: ahead of everyone who had waited before the restart."""
    await runner.start(slow_executor())
    chat = tg.private_chat(alice)
    bob = tg.user(202, "Bob")
    bob_chat = tg.private_chat(bob)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    tg.send_photo(bob_chat, bob, image_bytes(seed=2), caption="great-wave")
    await wait_text(tg, bob_chat["id"], "queue")
    await runner.stop()

    held = tg.hold("getFile")  # the restart's first fetch, of Alice's photo, is slow
    await runner.start()
    await asyncio.wait_for(held.reached.wait(), 15)
    carol = tg.user(303, "Carol")
    carol_chat = tg.private_chat(carol)
    tg.send_photo(carol_chat, carol, image_bytes(seed=3), caption="the-scream")
    await wait_text(tg, carol_chat["id"], "queue")
    # Her photo waits for the recovery; she doesn't: her handler waited, and her next updates
    # (a Cancel press, /help) queued behind it until the recovery was over.
    tg.send_text(carol_chat, carol, "/help")
    await wait_text(tg, carol_chat["id"], "How it works")
    held.release()
    for who in (chat, bob_chat, carol_chat):
        await wait_photo(tg, who["id"], timeout=60)
    order = [r.params["chat_id"] for r in tg.calls("sendPhoto")]
    assert order == [str(c["id"]) for c in (chat, bob_chat, carol_chat)], order


async def test_a_result_that_cannot_be_stored_is_reported_not_left_painting(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """A full disk or a lost results volume used to leave "Painting… 100%" until the next restart."""
    results = bot.data_dir / "results"
    results.rmdir()
    results.write_bytes(b"not a directory")  # every write below it fails, as on a lost volume
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (closed,) = await wait_text(tg, chat["id"], "could not store", method="editMessageText", timeout=60)
    assert "Sorry" in text_of(closed) and not closed.params.get("reply_markup")

    results.unlink()
    results.mkdir()  # the disk is back: the same request works again
    tg.send_text(chat, alice, "/style great-wave")
    await wait_photo(tg, chat["id"], timeout=60)
