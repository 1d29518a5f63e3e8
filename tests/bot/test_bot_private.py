"""The private conversation, end to end: what a user sends, what comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bot_helpers import (
    BotRunner,
    FakeTelegram,
    answers,
    button_data,
    chat_of,
    find_button,
    image_bytes,
    msg_id,
    param,
    photo_requests,
    reply_to,
    settle,
    text_of,
    texts_to,
    wait_photo,
    wait_text,
    wait_until,
)

from nst_core import presets
from nst_core.executor import LocalExecutor


async def test_start_and_help_explain_with_presets(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/start")
    (start,) = await wait_text(tg, chat["id"], "Hi Alice")
    assert "starry-night" in text_of(start) and "Send me a photo" in text_of(start)
    tg.send_text(chat, alice, "/help")
    (help_,) = await wait_text(tg, chat["id"], "How it works")
    assert "/stylize" in text_of(help_) and "great-wave" in text_of(help_)
    assert "waiting for its style" not in text_of(start)
    # With a photo waiting for its style, /start and /queue say so: only /cancel used to admit it.
    tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "nothing in the works")
    assert "Your last photo is waiting for its style" in text_of(queue) and "Send me a photo" not in text_of(queue)
    tg.send_text(chat, alice, "/start")
    again = (await wait_text(tg, chat["id"], "Hi Alice", count=2))[1]
    assert "Your last photo is waiting for its style" in text_of(again)


async def test_command_menu_is_registered_at_start(tg: FakeTelegram, bot: BotRunner) -> None:
    (req,) = tg.calls("setMyCommands")
    names = {c["command"] for c in param(req, "commands")}
    assert {"start", "help", "style", "styles", "settings", "cancel", "queue"} <= names


async def test_photo_then_preset_button_gives_result_with_buttons(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    runner.overrides.update(status_interval_s=0.0)  # every progress step shows (jobs here take ~1 s)
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(10,)))
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes())
    (prompt,) = await wait_text(tg, chat["id"], "pick a style")
    assert reply_to(prompt) == msg_id(photo)
    labels = button_data(prompt)
    assert "The Starry Night" in labels and len(labels) == 11

    message, data = find_button(tg, chat["id"], "p:starry-night:")
    tg.press_button(message, alice, data)

    (status,) = await wait_text(tg, chat["id"], "queue")
    assert reply_to(status) == msg_id(photo)
    assert "✖ Cancel" in button_data(status)
    (result,) = await wait_photo(tg, chat["id"])
    assert reply_to(result) == msg_id(photo)
    caption = text_of(result)
    assert "The Starry Night" in caption and "strength 5" in caption and "64×" in caption
    assert set(button_data(result)) == {"➕ Stronger", "➖ Weaker", "🎨 Another style", "📄 Full size", "↗ Share"}
    assert button_data(result)["↗ Share"] == "switch_inline_query"
    # The status message went from the queue to painting progress, then away.
    edits = [text_of(r) for r in tg.calls("editMessageText") if chat_of(r) == chat["id"]]
    assert any("Painting…" in t and "%" in t for t in edits)
    await tg.wait_for("deleteMessage", lambda r: chat_of(r) == chat["id"])
    # The style keyboard was closed, so it can't start a second job.
    assert any("Style: <b>The Starry Night</b>" in text_of(r) for r in tg.calls("editMessageText"))


async def test_a_tiny_photo_is_painted_with_a_note_that_it_will_look_soft(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """A 30×24 photo enlarged to 80 px was painted without a word on why the result is blurry."""
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/size large")
    await wait_text(tg, chat["id"], "80")
    tg.send_photo(chat, alice, image_bytes(30, 24), caption="great-wave")
    (status,) = await wait_text(tg, chat["id"], "queue")
    assert "only 30×24 pixels" in text_of(status) and "at 80 px" in text_of(status)
    await wait_photo(tg, chat["id"])
    tg.send_photo(chat, alice, image_bytes(40, 32, seed=2), caption="great-wave")  # enlarged twice: fine
    statuses = await wait_text(tg, chat["id"], "queue", count=2)
    assert "pixels" not in text_of(statuses[1])


async def test_stronger_weaker_and_full_size_buttons(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    (first,) = await wait_photo(tg, chat["id"])
    assert "strength 5" in text_of(first)
    result_msg = tg.messages(chat["id"])[-1]
    assert result_msg.get("photo")
    data = button_data(first)

    tg.press_button(result_msg, alice, data["➕ Stronger"])
    tg.press_button(result_msg, alice, data["➕ Stronger"])  # a double tap: it painted the same picture twice
    await tg.wait_for("answerCallbackQuery", lambda r: "already in the works" in text_of(r))
    results = await wait_photo(tg, chat["id"], count=2)
    assert "strength 7" in text_of(results[1]) and reply_to(results[1]) == msg_id(photo)

    tg.press_button(result_msg, alice, data["➖ Weaker"])
    results = await wait_photo(tg, chat["id"], count=3)
    assert "strength 3" in text_of(results[2])
    assert "strength 7" not in text_of(results[2])  # no second copy of the stronger one in between
    # Once painted, the same press again made an identical copy; now it points to the one there is.
    tg.press_button(result_msg, alice, data["➕ Stronger"])
    await tg.wait_for("answerCallbackQuery", lambda r: "strength 7 is already in this chat" in text_of(r))

    tg.press_button(result_msg, alice, data["🎨 Another style"])
    (again,) = await wait_text(tg, chat["id"], "Pick another style")
    assert reply_to(again) == result_msg["message_id"]
    # Pressed twice: the first keyboard was closed as if a newer photo had taken its place.
    tg.press_button(result_msg, alice, data["🎨 Another style"])
    await wait_text(tg, chat["id"], "Pick another style", count=2)
    (closed,) = await wait_text(tg, chat["id"], "Closed:", method="editMessageText")
    assert text_of(closed) == "Closed: the same buttons are below."
    message, kiss = find_button(tg, chat["id"], "p:the-kiss:")
    tg.press_button(message, alice, kiss)
    results = await wait_photo(tg, chat["id"], count=4)
    assert "The Kiss" in text_of(results[3]) and reply_to(results[3]) == msg_id(photo)

    # A send that failed doesn't count: pressing again (as told) sends it, not "on its way".
    tg.fail("sendDocument", 500, "Internal Server Error", chat_id=chat["id"])
    tg.press_button(result_msg, alice, data["📄 Full size"])
    await wait_text(tg, chat["id"], "press 📄 Full size again")
    tg.press_button(result_msg, alice, data["📄 Full size"])
    tg.press_button(result_msg, alice, data["📄 Full size"])  # a double tap sent the file twice
    await tg.wait_for("answerCallbackQuery", lambda r: "Already on its way" in text_of(r))
    (doc,) = await tg.wait_for("sendDocument", lambda r: chat_of(r) == chat["id"] and r.status == 200)
    assert reply_to(doc) == result_msg["message_id"]
    assert doc.files and next(iter(doc.files.values()))[:2] == b"\xff\xd8"  # the JPEG itself, uncompressed
    (name,) = doc.filenames.values()
    assert re.fullmatch(r"great-wave-[0-9a-f]{8}\.jpg", name), name  # saved under the painting's name

    # Once the file is gone (old results are removed), the button says so, and says only that:
    # it answered "Sending the full-size file…" and then that the result was gone.
    kiss_msg = next(m for m in tg.messages(chat["id"]) if "The Kiss" in m.get("caption", ""))
    full = button_data(results[3])["📄 Full size"]
    for path in (bot.data_dir / "results").glob(f"{full.split(':')[1]}.*"):
        path.unlink()
    tg.press_button(kiss_msg, alice, full)
    await tg.wait_for("answerCallbackQuery", lambda r: "no longer on the server" in text_of(r))
    await settle(0.3)
    sent = [r for r in tg.calls("sendDocument") if r.status == 200]
    assert len(sent) == 1 and not any("Sending" in a for a in answers(tg)[-1:])


async def test_a_button_press_that_can_no_longer_be_answered_still_does_its_job(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """Full size answered too late ("query is too old") sent nothing, and for the next 10 s
    pressing again said the file was already on its way."""
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    (result,) = await wait_photo(tg, chat["id"])
    (result_msg,) = [m for m in tg.messages(chat["id"]) if m.get("photo")]
    tg.fail("answerCallbackQuery", 400, "Bad Request: query is too old and response timeout expired")
    tg.press_button(result_msg, alice, button_data(result)["📄 Full size"])
    (doc,) = await tg.wait_for("sendDocument", lambda r: chat_of(r) == chat["id"] and r.status == 200)
    assert reply_to(doc) == result_msg["message_id"]
    # Any button: a press made while the bot was down is answered too late, and "Another style"
    # then showed nothing at all ("Something went wrong" couldn't be shown either).
    tg.fail("answerCallbackQuery", 400, "Bad Request: query is too old and response timeout expired")
    tg.press_button(result_msg, alice, button_data(result)["🎨 Another style"])
    await wait_text(tg, chat["id"], "Pick another style")
    message, kiss = find_button(tg, chat["id"], "p:the-kiss:")
    tg.fail("answerCallbackQuery", 400, "Bad Request: query is too old and response timeout expired")
    tg.press_button(message, alice, kiss)
    await wait_photo(tg, chat["id"], count=2)
    (closed,) = await wait_text(tg, chat["id"], "The Kiss", method="editMessageText")  # its buttons went
    assert not closed.params.get("reply_markup")


async def test_an_edited_message_is_answered_not_ignored(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """Fixing a typo by editing got silence: the bot reads only new messages, and now says so."""
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes(), caption="starry nigth")
    await wait_text(tg, chat["id"], "Did you mean")
    tg.edit_message(photo, caption="starry night")
    (answer,) = await wait_text(tg, chat["id"], "not edits")
    assert reply_to(answer) == msg_id(photo)
    # An edited command is not run again either (PTB runs them by default): it is answered the same way.
    command = tg.send_text(chat, alice, "/strength 8")
    await wait_text(tg, chat["id"], "Strength set to 8")
    tg.edit_message(command, text="/strength 9", entities=[{"type": "bot_command", "offset": 0, "length": 9}])
    await wait_text(tg, chat["id"], "not edits", count=2)
    await settle(0.5)
    assert photo_requests(tg, chat["id"]) == []  # nothing painted twice, or at all, from an edit
    assert not [r for r in tg.calls("sendMessage", chat["id"]) if "Strength set to 9" in text_of(r)]


async def test_own_style_image(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes(seed=1))
    await wait_text(tg, chat["id"], "pick a style")
    prompt, _ = find_button(tg, chat["id"], "p:")
    style = tg.send_photo(chat, alice, image_bytes(seed=3), caption="my cat")  # a caption that names no style
    (result,) = await wait_photo(tg, chat["id"])
    assert "🖼 Your own style ·" in text_of(result)
    assert reply_to(result) == msg_id(photo)
    # Said under the second picture too: only the prompt above used to show it became a style.
    (used,) = await wait_text(tg, chat["id"], "using this picture as the style")
    assert reply_to(used) == msg_id(style)
    # The prompt says what the second picture became, and its buttons are gone: they looked
    # usable, and answered "older message" while the photo was being painted.
    closed = next(m for m in tg.messages(chat["id"]) if m["message_id"] == prompt["message_id"])
    assert closed["text"] == "Style: <b>Your own style</b> ✓" and "reply_markup" not in closed


async def test_a_newer_photo_closes_the_older_ones_style_buttons(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1))
    await wait_text(tg, chat["id"], "pick a style")
    first, _ = find_button(tg, chat["id"], "p:")
    tg.send_photo(chat, alice, image_bytes(seed=2), caption="starry nite")  # a new photo, a misspelt style
    await wait_text(tg, chat["id"], "Did you mean")
    second, data = find_button(tg, chat["id"], "p:starry-night:")
    assert second["message_id"] != first["message_id"]
    closed = next(m for m in tg.messages(chat["id"]) if m["message_id"] == first["message_id"])
    assert "newer request" in closed["text"] and "reply_markup" not in closed
    tg.press_button(second, alice, data)
    (result,) = await wait_photo(tg, chat["id"])
    assert "The Starry Night" in text_of(result)


async def test_album_of_two_is_photo_then_style(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    first = tg.send_photo(chat, alice, image_bytes(seed=1), media_group_id="album-1")
    tg.send_photo(chat, alice, image_bytes(seed=2), media_group_id="album-1")
    # Said under the album, as under a second photo sent alone: only "Your own style" showed it.
    (note,) = await wait_text(tg, chat["id"], "second picture as the style for the first")
    assert reply_to(note) == msg_id(first) and "<code>starry-night</code>" in text_of(note)
    (result,) = await wait_photo(tg, chat["id"])
    assert "🖼 Your own style ·" in text_of(result)
    assert reply_to(result) == msg_id(first)
    assert not any("pick a style" in text_of(r) for r in tg.calls("sendMessage"))


async def test_an_album_after_a_style_was_named_paints_each_picture_in_it(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """Named first, the style was kept for a single photo, but an album ignored it (and kept it
    for whatever photo came next): it paints the album, like a caption naming it."""
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/style the-scream")
    await wait_text(tg, chat["id"], "it is: now send me the photo")
    photos = [tg.send_photo(chat, alice, image_bytes(seed=s), media_group_id="album-2") for s in (1, 2)]
    results = await wait_photo(tg, chat["id"], count=2)
    assert all("The Scream" in text_of(r) for r in results)
    assert {reply_to(r) for r in results} == {msg_id(p) for p in photos}
    tg.send_photo(chat, alice, image_bytes(seed=3))  # used up: the next photo is asked for its style
    await wait_text(tg, chat["id"], "pick a style")


async def test_album_of_three_says_what_it_used_and_how_to_paint_them_all(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    chat = tg.private_chat(alice)
    photos = [tg.send_photo(chat, alice, image_bytes(seed=seed), media_group_id="album-3") for seed in (1, 2, 3)]
    (note,) = await wait_text(tg, chat["id"], "first two pictures")
    assert "caption" in text_of(note) and "<code>starry-night</code>" in text_of(note)
    (result,) = await wait_photo(tg, chat["id"])
    assert "🖼 Your own style ·" in text_of(result) and reply_to(result) == msg_id(photos[0])


async def test_an_album_captioned_with_a_style_paints_each_picture_in_it(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """The caption was ignored and the second picture silently became the style."""
    chat = tg.private_chat(alice)
    photos = [
        tg.send_photo(chat, alice, image_bytes(seed=seed), media_group_id="album-2", caption=caption)
        for seed, caption in ((1, "starry-night"), (2, None), (3, None), (4, None))
    ]
    # Two at most in the works (the default limit): the third is refused, and says why; the
    # fourth went unmentioned, never painted.
    (limit,) = await wait_text(tg, chat["id"], "in the works")
    assert reply_to(limit) == msg_id(photos[2])
    (rest,) = await wait_text(tg, chat["id"], "last picture wasn't started either")
    assert reply_to(rest) == msg_id(photos[2])
    assert "same caption" in text_of(limit) and "same caption" in text_of(rest)
    results = await wait_photo(tg, chat["id"], count=2)
    assert all("The Starry Night" in text_of(r) for r in results)
    assert {reply_to(r) for r in results} == {msg_id(photos[0]), msg_id(photos[1])}

    # The fourth sent back without a caption: it kept the third waiting for a style, so the
    # fourth became its style, and painted the third in it.
    tg.send_photo(chat, alice, image_bytes(seed=4))
    await wait_text(tg, chat["id"], "pick a style")  # a photo of its own
    assert not any("as the style for your photo" in t for t in texts_to(tg, chat["id"]))


async def test_an_album_captioned_with_a_misspelt_style_asks_which(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """The caption was ignored and the second picture silently became the style."""
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), media_group_id="album-x", caption="stary nite")
    tg.send_photo(chat, alice, image_bytes(seed=2), media_group_id="album-x")
    (ask,) = await wait_text(tg, chat["id"], "I don't know a style called")
    assert "<code>starry-night</code>" in text_of(ask)
    await settle(1.0)
    assert not any("queue" in t for t in texts_to(tg, chat["id"]))


async def test_a_style_named_for_a_particular_photo_paints_that_photo(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """A captioned photo left the older photo's buttons open, and a style name sent as a
    reply to an older photo painted the latest one instead."""
    chat = tg.private_chat(alice)
    older = tg.send_photo(chat, alice, image_bytes(seed=1))
    await wait_text(tg, chat["id"], "pick a style")
    picker, _ = find_button(tg, chat["id"], "p:")
    newer = tg.send_photo(chat, alice, image_bytes(seed=2), caption="great-wave")
    (first,) = await wait_photo(tg, chat["id"])
    assert reply_to(first) == msg_id(newer)
    closed = next(m for m in tg.messages(chat["id"]) if m["message_id"] == picker["message_id"])
    assert "newer request" in closed["text"] and "reply_markup" not in closed

    tg.send_text(chat, alice, "starry night", reply_to=older["message"])
    _, second = await wait_photo(tg, chat["id"], count=2)
    assert reply_to(second) == msg_id(older) and "The Starry Night" in text_of(second)

    # A name that fits two paintings offers both.
    tg.send_text(chat, alice, "van gogh", reply_to=older["message"])
    (both,) = await wait_text(tg, chat["id"], "Did you mean")
    assert "<code>starry-night</code> or <code>" in text_of(both)


async def test_image_file_for_full_quality(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    doc = tg.send_document(chat, alice, image_bytes(fmt="PNG"), file_name="cat.png", mime_type="image/png")
    (prompt,) = await wait_text(tg, chat["id"], "pick a style")
    assert reply_to(prompt) == msg_id(doc)
    msg, data = find_button(tg, chat["id"], "p:the-scream:")
    tg.press_button(msg, alice, data)
    (result,) = await wait_photo(tg, chat["id"])
    assert "The Scream" in text_of(result) and reply_to(result) == msg_id(doc)


async def test_an_image_file_of_unknown_type_is_taken_by_its_name(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """Some clients send every file as application/octet-stream: a JPEG was refused as not an image."""
    chat = tg.private_chat(alice)
    doc = tg.send_document(
        chat, alice, image_bytes(), file_name="IMG_001.JPG", mime_type="application/octet-stream", caption="great-wave"
    )
    (result,) = await wait_photo(tg, chat["id"])
    assert "Great Wave" in text_of(result) and reply_to(result) == msg_id(doc)


async def test_an_iphone_photo_sent_as_a_heic_file_is_painted(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """/start suggests files for full quality, and an iPhone's files are HEIC: it was "not an image"."""
    chat = tg.private_chat(alice)
    heic = image_bytes(fmt="HEIF")
    for mime in ("image/heic", "application/octet-stream"):
        doc = tg.send_document(chat, alice, heic, file_name="IMG_0042.HEIC", mime_type=mime, caption="the-kiss")
        result = (await wait_photo(tg, chat["id"], count=1 + (mime != "image/heic")))[-1]
        assert "The Kiss" in text_of(result) and reply_to(result) == msg_id(doc)


async def test_without_the_heic_extra_a_heic_file_gets_the_way_round(
    tg: FakeTelegram, bot: BotRunner, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default install has no HEIC reader: "not an image" was wrong, and left the user stuck."""
    from PIL import Image

    heic = image_bytes(fmt="HEIF")
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])  # as if not installed
    chat = tg.private_chat(alice)
    tg.send_document(chat, alice, heic, file_name="IMG_0043.HEIC", mime_type="image/heic", caption="the-kiss")
    (advice,) = await wait_text(tg, chat["id"], "HEIC file")
    assert "Send it as a photo instead of a file" in text_of(advice) and "not an image" not in text_of(advice)
    assert not tg.calls("sendPhoto")


async def test_caption_naming_a_preset_is_a_complete_request(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes(), caption="Starry Night")
    (result,) = await wait_photo(tg, chat["id"])
    assert "The Starry Night" in text_of(result) and reply_to(result) == msg_id(photo)
    assert not any("pick a style" in text_of(r) for r in tg.calls("sendMessage"))

    # The painter's name, when he has one painting here; captions show the short title.
    tg.send_photo(chat, alice, image_bytes(seed=2), caption="Hokusai")
    results = await wait_photo(tg, chat["id"], count=2)
    assert "🖼 The Great Wave ·" in text_of(results[1]) and "Kanagawa" not in text_of(results[1])


async def test_style_command_and_typed_name_for_last_photo(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "/style great-wave")
    (result,) = await wait_photo(tg, chat["id"])
    assert "Great Wave" in text_of(result)
    # /style with no name shows the keyboard again for the same photo; a typed name works too.
    tg.send_text(chat, alice, "/style")
    (again,) = await wait_text(tg, chat["id"], "Pick a style for your last photo")
    assert len(button_data(again)) == 11
    tg.send_text(chat, alice, "the-kiss")
    results = await wait_photo(tg, chat["id"], count=2)
    assert "The Kiss" in text_of(results[1])
    assert len(photo_requests(tg, chat["id"])) == 2
    # Chatter now is told what a name would do, not "I need a photo" (a name then paints one)...
    tg.send_text(chat, alice, "hello")
    (hint,) = await wait_text(tg, chat["id"], "to paint your last one")
    assert "I need a photo" not in text_of(hint)
    # ...and a style it is already painted in, with the same settings, is not painted the same again.
    tg.send_text(chat, alice, "great wave")
    (again,) = await wait_text(tg, chat["id"], "already painted")
    assert "The Great Wave" in text_of(again)
    tg.send_text(chat, alice, "/strength 9")  # changed settings: a new picture after all
    await wait_text(tg, chat["id"], "Strength set to 9")
    tg.send_text(chat, alice, "great wave")
    results = await wait_photo(tg, chat["id"], count=3)
    assert "strength 9" in text_of(results[2])


async def test_a_style_typed_long_after_the_photo_paints_it_like_its_buttons_would(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """After the draft's lifetime the buttons under the photo still painted it, but a typed name
    got "Send me a photo first" with the photo and its open keyboard right above."""
    runner.overrides.update(draft_ttl_s=0.5)
    await runner.start()
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    await asyncio.sleep(1.0)
    tg.send_text(chat, alice, "great wave")
    (result,) = await wait_photo(tg, chat["id"])
    assert reply_to(result) == msg_id(photo) and "The Great Wave" in text_of(result)
    # A picture sent that late is a new photo, not the old one's style.
    second = tg.send_photo(chat, alice, image_bytes(seed=2))
    await wait_text(tg, chat["id"], "pick a style", count=2)
    await asyncio.sleep(1.0)
    # And the rest agree with the buttons too: /queue sees it, /style paints it, /cancel drops it.
    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "nothing in the works")
    assert "Your last photo is waiting for its style" in text_of(queue)
    tg.send_text(chat, alice, "/style the kiss")
    results = await wait_photo(tg, chat["id"], count=2)
    assert reply_to(results[1]) == msg_id(second) and "The Kiss" in text_of(results[1])
    tg.send_photo(chat, alice, image_bytes(seed=3))
    await wait_text(tg, chat["id"], "pick a style", count=3)
    await asyncio.sleep(1.0)
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo")


async def test_a_style_asked_twice_while_painting_leaves_no_photo_waiting(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    """The refusal "already in the works" marked the photo as waiting for a style, so the next photo sent
    became its style: painted a second time, and the new photo never."""
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(400,)))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="the-scream")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    tg.send_text(chat, alice, "the scream")
    await wait_text(tg, chat["id"], "already in the works")
    new = tg.send_photo(chat, alice, image_bytes(seed=2))
    (ask,) = await wait_text(tg, chat["id"], "pick a style")
    assert reply_to(ask) == msg_id(new)
    assert not [r for r in tg.calls("sendMessage") if "using this picture as the style" in text_of(r)]
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Cancelled")


async def test_a_style_named_before_a_photo_is_not_left_for_a_later_one(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """Named first, then a photo captioned with another style: the named one then painted the
    photo after that, with no buttons and no word.  The same after Another style."""
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "stary nite")  # misspelt with no photo: asked, as /style asks
    await wait_text(tg, chat["id"], "Did you mean")
    tg.send_text(chat, alice, "the-scream")
    await wait_text(tg, chat["id"], "<b>The Scream</b> it is")
    tg.send_text(chat, alice, "/queue")
    (queue,) = await wait_text(tg, chat["id"], "nothing in the works")
    assert "<b>The Scream</b> waits for your next photo" in text_of(queue)
    tg.send_photo(chat, alice, image_bytes(seed=1), caption="great-wave")
    (first,) = await wait_photo(tg, chat["id"])
    assert "The Great Wave" in text_of(first)
    later = tg.send_photo(chat, alice, image_bytes(seed=2))
    (ask,) = await wait_text(tg, chat["id"], "pick a style")
    assert reply_to(ask) == msg_id(later)
    # From a result's Another style, a style painted already is refused as a typed name is.
    tg.send_text(chat, alice, "/cancel")
    await wait_text(tg, chat["id"], "Dropped the photo")
    result_msg = next(m for m in tg.messages(chat["id"]) if m.get("photo"))
    tg.press_button(result_msg, alice, button_data(first)["🎨 Another style"])
    await wait_text(tg, chat["id"], "Pick another style")
    message, wave = find_button(tg, chat["id"], "p:great-wave:")
    tg.press_button(message, alice, wave)
    await tg.wait_for("answerCallbackQuery", lambda r: "already painted in The Great Wave" in text_of(r))
    await settle(0.5)
    assert len(photo_requests(tg, chat["id"])) == 1


async def test_style_shown_again_closes_the_first_keyboard(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    """Two live keyboards for one photo: a press on the first painted it, then the second said "already picked"."""
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    first, _ = find_button(tg, chat["id"], "p:")
    tg.send_text(chat, alice, "/style")
    await wait_text(tg, chat["id"], "Pick a style for your last photo")
    (closed,) = await wait_text(tg, chat["id"], "the same buttons are below", method="editMessageText")
    assert int(param(closed, "message_id")) == first["message_id"] and not param(closed, "reply_markup")
    message, data = find_button(tg, chat["id"], "p:the-scream:")
    assert message["message_id"] != first["message_id"]
    tg.press_button(message, alice, data)
    (result,) = await wait_photo(tg, chat["id"])
    assert "The Scream" in text_of(result)


async def test_a_typed_name_it_does_not_know_is_said_so_and_a_sentence_may_name_one(
    tg: FakeTelegram, bot: BotRunner, alice: dict
) -> None:
    """ "picasso" got the generic "I'm waiting for a style" reminder, and a sentence naming a title nothing."""
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes())
    await wait_text(tg, chat["id"], "pick a style")
    tg.send_text(chat, alice, "picasso")
    (unknown,) = await wait_text(tg, chat["id"], "I don't know a style called “picasso”")
    assert "I have your photo" in text_of(unknown)
    tg.send_text(chat, alice, "Make it look like The Starry Night, please!")
    (result,) = await wait_photo(tg, chat["id"])
    assert "The Starry Night" in text_of(result) and reply_to(result) == msg_id(photo)


@pytest.fixture
def unreachable_presets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[int]]:
    """An empty preset cache and sources on a local server that hangs up on every request.

    Yields the running count of requests it received.
    """
    hits = [0]

    class HangUp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            hits[0] += 1

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), HangUp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NST_PRESET_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("NST_PRESET_SOURCE_DIR")
    for p in presets.catalog().values():
        url = f"http://127.0.0.1:{server.server_address[1]}/{p.file}"
        monkeypatch.setitem(presets.catalog(), p.slug, dataclasses.replace(p, raw_url=url))
    try:
        yield hits
    finally:
        server.shutdown()
        server.server_close()


async def test_styles_without_the_paintings_lists_them_after_one_failed_download(
    tg: FakeTelegram, runner: BotRunner, alice: dict, unreachable_presets: list[int]
) -> None:
    await runner.start()
    await wait_until(lambda: unreachable_presets[0] == len(presets.catalog()), what="the start-up fetch to give up")
    await settle()
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/styles")
    (reply,) = await wait_text(tg, chat["id"], "pick one of these")
    assert "starry-night" in text_of(reply) and "contrast-of-forms" in text_of(reply)
    assert not tg.calls("sendMediaGroup")
    assert unreachable_presets[0] == len(presets.catalog()) + 1  # /styles tried one download, not eleven


async def test_styles_gallery_shows_titles_and_artists(tg: FakeTelegram, bot: BotRunner, alice: dict) -> None:
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/styles")
    groups = await tg.wait_for("sendMediaGroup", count=2)
    captions = [m.get("caption", "") for g in groups for m in param(g, "media")]
    assert len(captions) == 11
    assert any("The Starry Night" in c and "Vincent van Gogh" in c for c in captions)
    # Titles as people say them; the catalogue's notes ("exact title unverified") are not for users.
    assert not [c for c in captions if "unverified" in c or "often labelled" in c], captions
    assert any(c.startswith("<b>The Great Wave</b> — ") for c in captions)
    await wait_text(tg, chat["id"], "pick one of these")
    tg.send_text(chat, alice, "/presets")  # what the CLI calls them; "I don't know that command" before
    await tg.wait_for("sendMediaGroup", count=4)
