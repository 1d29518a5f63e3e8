"""Per-user settings: the commands, the /settings buttons, and that jobs and restarts honour them."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

from bot_helpers import (
    BotRunner,
    FakeTelegram,
    answers,
    button_data,
    chat_of,
    find_button,
    image_bytes,
    settle,
    text_of,
    wait_photo,
    wait_text,
    wait_until,
)

from nst_core.executor import LocalExecutor


async def test_each_setting_command(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    for command, expected in [
        ("/strength 8", "Strength set to 8"),
        ("/size small", "Size set to small"),
        ("/quality fast", "Quality set to fast"),
        ("/color on", "keep your photo's colours"),  # the other spellings people type are taken too
        ("/colours off", "take the painting's colours"),
        ("/colors on", "keep your photo's colours"),
    ]:
        tg.send_text(chat, alice, command)
        await wait_text(tg, chat["id"], expected)
    tg.send_text(chat, alice, "/settings")
    (shown,) = await wait_text(tg, chat["id"], "Your settings")
    text = text_of(shown)
    assert "Strength: 8" in text and "Size: small" in text and "Quality: fast" in text and "colours: on" in text

    tg.send_text(chat, alice, "/reset")
    (reset,) = await wait_text(tg, chat["id"], "back to the defaults")
    assert "Strength: 5" in text_of(reset) and "colours: off" in text_of(reset)


async def test_bad_setting_values_explain_the_choices(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/strength 11")
    (wrong,) = await wait_text(tg, chat["id"], "number from 1 (subtle) to 10")
    assert text_of(wrong).startswith("“11” won't do.")  # said to be wrong, not only the usage again
    tg.send_text(chat, alice, "/strength")
    plain = (await wait_text(tg, chat["id"], "number from 1 (subtle) to 10", count=2))[1]
    assert "won't do" not in text_of(plain)  # no argument: nothing was wrong
    tg.send_text(chat, alice, "/size huge")
    (usage,) = await wait_text(tg, chat["id"], "<code>small</code>, <code>medium</code> or <code>large</code>")
    assert "“huge” won't do." in text_of(usage)
    assert {"small", "✓ medium", "large"} <= set(button_data(usage))  # or tap one
    # The label between − and + is a button too: pressing it says what to press instead.
    message, data = find_button(tg, chat["id"], "s:noop:")
    tg.press_button(message, alice, data)
    await wait_until(lambda: "Use − and + beside it to change the strength." in answers(tg), what="a hint")
    tg.send_text(chat, alice, "/quality perfect")
    await wait_text(tg, chat["id"], "<code>fast</code>, <code>balanced</code> or <code>best</code>")
    tg.send_text(chat, alice, "/colors maybe")
    await wait_text(tg, chat["id"], "/colors on")
    tg.send_text(chat, alice, "/settings")
    (shown,) = await tg.wait_for("sendMessage", lambda r: text_of(r).startswith("<b>Your settings"))
    assert "Strength: 5" in text_of(shown)  # nothing changed


async def test_settings_buttons_edit_the_message(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/settings")
    await wait_text(tg, chat["id"], "Your settings")
    for prefix, expected in [
        ("s:str:+1", "Strength: 6"),
        ("s:size:large", "Size: large (80 px"),
        ("s:q:best", "Quality: best"),
        ("s:col:toggle", "colours: on"),
        ("s:reset", "Strength: 5"),
    ]:
        message, data = find_button(tg, chat["id"], prefix)
        tg.press_button(message, alice, data)
        await wait_text(tg, chat["id"], expected, method="editMessageText")
    message, data = find_button(tg, chat["id"], "s:str:-1")
    tg.press_button(message, alice, data)
    (edit,) = await wait_text(tg, chat["id"], "Strength: 4", method="editMessageText")
    assert "✓ medium" in button_data(edit)


async def test_in_a_group_only_the_owner_can_use_a_settings_panel(
    tg: FakeTelegram, bot: BotRunner, alice: dict, bob: dict
) -> None:
    group = tg.group_chat()
    tg.send_text(group, alice, "/settings")
    await wait_text(tg, group["id"], "Alice's settings")  # the panel is public: it says whose it is
    message, data = find_button(tg, group["id"], "s:str:+1")
    tg.press_button(message, bob, data)
    await wait_until(lambda: any("someone else's settings" in a for a in answers(tg)), what="the refusal")
    await settle(0.5)
    assert not tg.calls("editMessageText"), "Alice's panel must not change"
    tg.send_text(group, bob, "/settings")
    (bobs,) = await wait_text(tg, group["id"], "Bob's settings")
    assert "Strength: 5" in text_of(bobs), "Bob's own settings must not change either"


async def test_settings_apply_to_jobs_and_survive_a_restart(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    await runner.start()
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/strength 9")
    await wait_text(tg, chat["id"], "Strength set to 9")
    tg.send_text(chat, alice, "/size large")
    await wait_text(tg, chat["id"], "Size set to large")
    await runner.stop()

    await runner.start()
    tg.send_photo(chat, alice, image_bytes(120, 100), caption="the-scream")
    (result,) = await wait_photo(tg, chat["id"])
    caption = text_of(result)
    assert "strength 9" in caption and "80×" in caption
    assert [r for r in tg.calls("sendPhoto") if chat_of(r) == chat["id"]] == [result]


async def test_size_is_capped_by_what_the_device_can_hold(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    bot.service.max_size = 72  # as if the device's memory only allowed 72 px
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/size large")
    (msg,) = await wait_text(tg, chat["id"], "at most 72 px")
    assert "Size set to large" in text_of(msg)
    tg.send_photo(chat, alice, image_bytes(120, 100), caption="the-scream")
    (result,) = await wait_photo(tg, chat["id"])
    assert "72×" in text_of(result)


def _price(text: str) -> float:
    """The seconds in "⏱ A picture takes about N s|min"."""
    found = re.search(r"A picture takes about (\d+) (s|min)", text)
    assert found, text
    return int(found[1]) * (60 if found[2] == "min" else 1)


@contextlib.asynccontextmanager
async def _timed_bot(tg: FakeTelegram, tmp_path: Path, job_timeout_s: float) -> AsyncIterator[BotRunner]:
    """A bot whose executor has timed its step, so that it can price a picture; on the
    product's schedules, where quality changes the steps, and a 1024 px "large"."""
    runner = BotRunner(tg, tmp_path / "data", size_large=1024, job_timeout_s=job_timeout_s)
    executor = LocalExecutor("cpu", timeout_s=job_timeout_s)
    await runner.start(executor)
    try:
        await wait_until(lambda: executor.hold is None, timeout=60, what="the warm-up")
        yield runner
    finally:
        await runner.stop()


async def test_settings_show_what_a_picture_costs_here(tg: FakeTelegram, tmp_path: Path, alice: dict) -> None:
    """Choosing "large" and "best" on a CPU means minutes a picture: the panel says so before the wait."""
    async with _timed_bot(tg, tmp_path, job_timeout_s=36000):
        chat = tg.private_chat(alice)
        tg.send_text(chat, alice, "/settings")
        (shown,) = await wait_text(tg, chat["id"], "Your settings")
        prices = [_price(text_of(shown))]
        for prefix, expected in [("s:size:large", "Size: large"), ("s:q:best", "Quality: best")]:
            message, data = find_button(tg, chat["id"], prefix)
            tg.press_button(message, alice, data)
            (edit,) = await wait_text(tg, chat["id"], expected, method="editMessageText")
            prices.append(_price(text_of(edit)))
        assert prices[0] < prices[1] < prices[2], prices
        assert "over the" not in text_of(edit)  # the 10 h a picture may take here

        # At the end of the scale, the button says so instead of a bare "No change."
        for _ in range(5):
            message, data = find_button(tg, chat["id"], "s:str:+1")
            tg.press_button(message, alice, data)
        await wait_text(tg, chat["id"], "Strength: 10", method="editMessageText")
        message, data = find_button(tg, chat["id"], "s:str:+1")
        tg.press_button(message, alice, data)
        await wait_until(lambda: "That's already the strongest setting." in answers(tg), what="the strongest answer")


async def test_a_picture_that_would_outrun_the_time_limit_is_refused_before_the_wait(
    tg: FakeTelegram, tmp_path: Path, alice: dict
) -> None:
    """Large and best on a CPU took longer than the limit: the user waited for minutes, then got a failure."""
    async with _timed_bot(tg, tmp_path, job_timeout_s=60):
        chat = tg.private_chat(alice)
        tg.send_text(chat, alice, "/size large")
        (saved,) = await wait_text(tg, chat["id"], "Size set to large")
        assert "over the 60 s a picture may take here" in text_of(saved)
        tg.send_photo(chat, alice, image_bytes(640, 480), caption="starry-night")
        (refused,) = await wait_text(tg, chat["id"], "This picture would take about")
        assert "over the 60 s limit here" in text_of(refused) and "/settings" in text_of(refused)
        assert not tg.calls("sendPhoto") and "Cancel" not in str(tg.messages(chat["id"]))  # no job, no status

        # Smaller, and the same photo is still there to paint.
        tg.send_text(chat, alice, "/size small")
        (small,) = await wait_text(tg, chat["id"], "Size set to small")
        assert "queue aside" in text_of(small)
        tg.send_text(chat, alice, "starry-night")
        (result,) = await wait_photo(tg, chat["id"], timeout=60)
        assert "The Starry Night" in text_of(result)
