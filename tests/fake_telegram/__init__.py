"""A fake Telegram Bot API server for the bot tests (see server.py)."""

from tests.fake_telegram.server import FakeTelegram, Request

__all__ = ["FakeTelegram", "Request"]
