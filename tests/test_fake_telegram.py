"""The fake Bot API answers like Telegram does, as seen through python-telegram-bot itself."""

import datetime as dtm
import io

import pytest
from PIL import Image
from telegram import Bot
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter

from tests.fake_telegram import FakeTelegram


def png(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def bot(tg: FakeTelegram, token: str | None = None) -> Bot:
    return Bot(token or tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)


async def test_messages_photos_files_and_edits(tg):
    async with bot(tg) as b:
        me = await b.get_me()
        assert me.username == "PainterBot" and me.supports_inline_queries
        sent = await b.send_photo(42, png(), caption="hi")
        assert sent.photo[-1].width == 40 and sent.caption == "hi"
        again = await b.send_photo(42, sent.photo[-1].file_id)  # re-send by file id
        file = await b.get_file(again.photo[-1].file_id)
        assert bytes(await file.download_as_bytearray()) == png()
        msg = await b.send_message(42, "queued")
        await b.edit_message_text("painting", chat_id=42, message_id=msg.message_id)
        with pytest.raises(BadRequest, match=r"(?i)not modified"):
            await b.edit_message_text("painting", chat_id=42, message_id=msg.message_id)
        assert [m.get("text") for m in tg.messages(42)][-1] == "painting"
    assert [r.method for r in tg.calls(chat_id=42)][:2] == ["sendPhoto", "sendPhoto"]


async def test_errors_are_telegrams(tg, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # as the bot runs (bot/app.py)
    big, _ = tg.add_file(b"x", file_size=25 * 1024 * 1024)
    tg.block_bot(7)
    async with bot(tg) as b:
        with pytest.raises(BadRequest, match=r"(?i)file is too big"):
            await b.get_file(big)
        with pytest.raises(Forbidden, match=r"(?i)blocked"):
            await b.send_message(7, "hello?")
        tg.flood("sendMessage", retry_after=3)
        with pytest.raises(RetryAfter) as flood:
            await b.send_message(8, "hello?")
        assert flood.value.retry_after == dtm.timedelta(seconds=3)
        await b.send_message(8, "hello!")  # the flood was one call
    with pytest.raises(InvalidToken):
        async with bot(tg, token="1:WRONG-TOKEN-abcdefghijklmnopqrstuvwxyz") as b:
            await b.get_me()


async def test_updates_arrive_by_long_polling(tg):
    alice = tg.user(5, "Alice")
    chat = tg.private_chat(alice)
    async with bot(tg) as b:
        assert await b.get_updates(timeout=0) == ()
        tg.send_text(chat, alice, "/start")
        tg.send_photo(chat, alice, png(), caption="/stylize starry-night")
        updates = await b.get_updates(timeout=2)
        assert updates[0].message.text == "/start" and updates[0].message.entities[0].type == "bot_command"
        assert updates[1].message.photo[-1].width == 40 and updates[1].message.caption.startswith("/stylize")
        assert await b.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
