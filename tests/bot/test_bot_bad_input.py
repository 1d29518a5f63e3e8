"""Every bad input and failure gets a clear, friendly reply and harms nothing else."""

from __future__ import annotations

import logging

import pytest
from bot_helpers import (
    BotRunner,
    FakeTelegram,
    find_button,
    image_bytes,
    msg_id,
    photo_requests,
    reply_to,
    settle,
    text_of,
    wait_photo,
    wait_text,
    wait_until,
)

import nst_core.runner
from nst_core.executor import LocalExecutor


async def test_text_sticker_and_other_files(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "hello, paint me something")
    await wait_text(tg, chat["id"], "I need a photo to paint")
    tg.send_voice(chat, alice)
    await wait_text(tg, chat["id"], "I need a photo to paint", count=2)
    tg.send_sticker(chat, alice)
    await wait_text(tg, chat["id"], "Stickers are fun")
    tg.send_document(chat, alice, b"%PDF-1.4\n%...", file_name="cv.pdf", mime_type="application/pdf")
    await wait_text(tg, chat["id"], "That's a PDF")
    tg.send_document(chat, alice, b"PK\x03\x04zip", file_name="photos.zip", mime_type="application/zip")
    await wait_text(tg, chat["id"], "isn't an image I can paint")
    tg.send_animation(chat, alice)  # a GIF was "That file isn't an image": the user sent no file
    await wait_text(tg, chat["id"], "That's an animation")
    # While a photo waits for its style, text gets a reminder rather than a generic answer.
    tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "what now?")
    await wait_text(tg, chat["id"], "waiting for a style")
    # ...and so do a sticker, a voice message and a file, which used to be told to send a photo:
    # the next photo would then have become the waiting photo's style.
    tg.send_sticker(chat, alice)
    (sticker,) = await wait_text(tg, chat["id"], "copy a style from a sticker")
    tg.send_voice(chat, alice)
    (voice,) = await wait_text(tg, chat["id"], "copy a style from that")
    tg.send_document(chat, alice, b"PK\x03\x04zip", file_name="photos.zip", mime_type="application/zip")
    (file,) = await wait_text(tg, chat["id"], "isn't an image I can copy a style from")
    tg.send_animation(chat, alice)
    (gif,) = await wait_text(tg, chat["id"], "copy a style from an animation")
    for answer in (sticker, voice, file, gif):
        assert "I have your photo" in text_of(answer) and "Send me a photo" not in text_of(answer)


async def test_corrupted_truncated_and_huge_images(tg: FakeTelegram, runner: BotRunner, alice: dict) -> None:
    runner.overrides.update(max_pixels=150 * 150)
    await runner.start()
    chat = tg.private_chat(alice)
    tg.send_document(chat, alice, b"GIF? no, just text", file_name="x.jpg", mime_type="image/jpeg")
    await wait_text(tg, chat["id"], "not an image")
    # As a style for a waiting photo: said without "the style image is not an image", and the photo waits.
    tg.send_photo(chat, alice, image_bytes(seed=4))
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_document(chat, alice, b"no style here", file_name="style.png", mime_type="image/png")
    (refused,) = await wait_text(tg, chat["id"], "the style image can't be read")
    assert "Your photo still waits for its style." in text_of(refused)
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo")
    good = image_bytes(120, 100)
    tg.send_photo(chat, alice, good[: len(good) // 2])
    await wait_text(tg, chat["id"], "truncated or corrupted")
    tg.send_document(chat, alice, image_bytes(400, 300, fmt="PNG"), file_name="big.png", mime_type="image/png")
    (huge,) = await wait_text(tg, chat["id"], "megapixels")
    assert "400×300" in text_of(huge) and "smaller one" in text_of(huge)
    assert photo_requests(tg, chat["id"]) == []
    # A good photo right after works as usual.
    tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    await wait_photo(tg, chat["id"])


async def test_long_thin_photos_are_painted_and_the_thinnest_refused_at_once(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """A 1000x60 banner failed in the painter with "something went wrong", every time."""
    chat = tg.private_chat(alice)
    banner = tg.send_photo(chat, alice, image_bytes(1000, 60), caption="starry-night")
    (result,) = await wait_photo(tg, chat["id"], timeout=60)
    assert reply_to(result) == msg_id(banner) and "533×32" in text_of(result)  # tall enough for the painter

    # Thinner than 20:1 once painted, which Telegram refuses as a photo: it comes as a file.
    ribbon = tg.send_photo(chat, alice, image_bytes(2000, 60), caption="great-wave")
    (sent,) = await tg.wait_for("sendDocument", lambda r: reply_to(r) == msg_id(ribbon), timeout=60)
    assert "Great Wave" in text_of(sent) and "1067×32" in text_of(sent)
    assert sent.filenames["document"].startswith("great-wave-")

    data = image_bytes(5000, 20, fmt="PNG")
    strip = tg.send_document(chat, alice, data, file_name="strip.png", mime_type="image/png", caption="great-wave")
    (refused,) = await wait_text(tg, chat["id"], "too long and thin")
    assert reply_to(refused) == msg_id(strip) and "crop" in text_of(refused)
    tg.send_text(chat, alice, "/queue")
    await wait_text(tg, chat["id"], "nothing in the works")  # refused before the queue, not failed in it


async def test_file_over_the_download_limit(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_document(
        chat, alice, image_bytes(), file_name="scan.png", mime_type="image/png", file_size=25 * 1024 * 1024
    )
    (msg,) = await wait_text(tg, chat["id"], "25.0 MB")
    assert "up to 20 MB" in text_of(msg)
    assert tg.calls("getFile") == []  # refused before downloading anything


async def test_style_without_photo_and_unknown_preset(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/style")
    await wait_text(tg, chat["id"], "Send me a photo first")
    # A style named before the photo is kept for it (it used to be forgotten: pick it again),
    # unless /cancel forgets it...
    tg.send_text(chat, alice, "the scream")
    await wait_text(tg, chat["id"], "<b>The Scream</b> it is")
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "forgot the style you picked")
    tg.send_text(chat, alice, "/style starry-night")
    await wait_text(tg, chat["id"], "<b>The Starry Night</b> it is: now send me the photo")
    first = tg.send_photo(chat, alice, image_bytes(seed=5))
    (painted,) = await wait_photo(tg, chat["id"])
    assert "The Starry Night" in text_of(painted) and reply_to(painted) == msg_id(first)
    # ...and used once: the next photo is asked for its style.
    tg.send_photo(chat, alice, image_bytes(seed=6))
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo")

    tg.send_photo(chat, alice, image_bytes(), caption="stary nite")
    (msg,) = await wait_text(tg, chat["id"], "I don't know a style called")
    assert "<code>starry-night</code>" in text_of(msg)
    # The photo is kept: the suggested name then works.
    tg.send_text(chat, alice, "/style grate-wave")
    (msg2,) = await wait_text(tg, chat["id"], "“grate-wave”")
    assert "great-wave" in text_of(msg2)
    tg.send_text(chat, alice, "/style starry-night")
    *_, result = await wait_photo(tg, chat["id"], count=2)
    assert "The Starry Night" in text_of(result)


async def test_buttons_of_old_messages(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1))
    await wait_text(tg, chat["id"], "pick a style")
    old_message, old_data = find_button(tg, chat["id"], "p:starry-night:")
    tg.press_button(old_message, alice, old_data)
    await wait_photo(tg, chat["id"])
    # The keyboard was used: pressing it again must not start a second job, and says why.
    tg.press_button(old_message, alice, old_data)
    await tg.wait_for("answerCallbackQuery", lambda r: "already picked a style for this photo" in text_of(r))
    tg.press_button(old_message, alice, "more:0123456789abcdef")
    await tg.wait_for("answerCallbackQuery", lambda r: "older message" in text_of(r))
    tg.press_button(old_message, alice, "garbage")
    await tg.wait_for("answerCallbackQuery", lambda r: "older message" in text_of(r), count=2)
    await settle(0.3)
    assert len(photo_requests(tg, chat["id"])) == 1


async def test_user_who_blocked_the_bot_is_dropped_and_logged(
    tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(40,)))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    await wait_text(tg, chat["id"], "queue")
    tg.block_bot(alice["id"])
    # The worker stays up for everybody else.
    bob_chat = tg.private_chat(bob)
    tg.send_photo(bob_chat, bob, image_bytes(seed=2), caption="great-wave")
    await wait_photo(tg, bob_chat["id"], timeout=60)
    await wait_until(lambda: any("blocked the bot" in r.getMessage() for r in caplog.records))
    assert not any(m.get("photo") for m in tg.messages(chat["id"]))
    tg.send_text(bob_chat, bob, "/queue")
    await wait_text(tg, bob_chat["id"], "nothing in the works")


async def test_engine_error_is_reported_and_the_worker_stays_up(
    tg: FakeTelegram, bot: BotRunner, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job fails, not the warm-up, which runs the engine too (to time its steps).
    real = nst_core.runner.run_job
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if calls["n"] == 2:
            raise RuntimeError("something nobody foresaw")
        return real(*args, **kwargs)

    monkeypatch.setattr(nst_core.runner, "run_job", flaky)
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/strength 7")
    await wait_text(tg, chat["id"], "Strength set to 7")
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (failed,) = await wait_text(tg, chat["id"], "couldn't paint this one", method="editMessageText")
    assert "too large for the painter's memory" in text_of(failed)
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (_, failed) = await wait_text(tg, chat["id"], "couldn't paint this one", method="editMessageText", count=2)
    assert "went wrong in the painter" in text_of(failed) and "something nobody foresaw" not in text_of(failed)
    assert text_of(failed).count("try again") == 1, text_of(failed)  # it said so twice
    tg.send_photo(chat, alice, image_bytes(), caption="starry-night")
    (result,) = await wait_photo(tg, chat["id"])
    assert "strength 7" in text_of(result)  # settings intact


async def test_flood_control_is_waited_out_and_retried(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.flood("sendPhoto", retry_after=1, times=1)
    tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    await wait_until(lambda: any(m.get("photo") for m in tg.messages(chat["id"])), timeout=30)
    attempts = tg.calls("sendPhoto")
    assert len(attempts) == 2, "the first attempt got 429 and was retried once"
    assert attempts[1].at - attempts[0].at >= 0.9
    await settle(0.5)
    assert sum(1 for m in tg.messages(chat["id"]) if m.get("photo")) == 1
