"""Helpers for the bot's tests: the real Application over HTTP against a fake Bot API server.

Each test gets a fresh ``FakeTelegram``, a fresh SQLite file in ``tmp_path``, and
the real engine (``LocalExecutor``) at 64 px and a few optimisation steps, so a
job takes a fraction of a second.  ``BotRunner`` starts and stops the bot the
way ``run_polling`` does, so a test can also stop it and start a new one on the
same database (the restart tests).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.fake_telegram` lives in the repository, not the package
    sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from bot.app import build_application  # noqa: E402
from bot.config import BotConfig  # noqa: E402
from nst_core.executor import Executor, LocalExecutor  # noqa: E402
from tests.fake_telegram.server import FakeTelegram  # noqa: E402

STEPS = (3,)


def image_bytes(width: int = 96, height: int = 80, *, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A small picture with some structure (gradients and shapes) for the engine to work on."""
    img = Image.new("RGB", (width, height))
    px = img.load()
    for y in range(height):
        for x in range(width):
            px[x, y] = ((x * 255 // width + seed * 40) % 256, (y * 255 // height) % 256, (seed * 90) % 256)
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(250 - seed * 30, 220, 40))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def param(request: Any, name: str, default: Any = None) -> Any:
    """A request parameter, JSON-decoded if it came as a JSON string (reply_markup etc.)."""
    value = request.params.get(name, default)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def buttons(request: Any) -> list[dict[str, Any]]:
    markup = param(request, "reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]


def button_data(request: Any) -> dict[str, str]:
    """Button text → callback data (or the switch_inline_query marker)."""
    out = {}
    for b in buttons(request):
        if "callback_data" in b:
            out[b["text"]] = b["callback_data"]
        elif "switch_inline_query" in b:
            out[b["text"]] = "switch_inline_query"
    return out


def reply_to(request: Any) -> int | None:
    rp = param(request, "reply_parameters")
    if isinstance(rp, dict):
        return int(rp["message_id"])
    mid = param(request, "reply_to_message_id")
    return int(mid) if mid is not None else None


def text_of(request: Any) -> str:
    return str(param(request, "text") or param(request, "caption") or "")


class BotRunner:
    """Starts the real Application (polling the fake server) and stops it like SIGINT would."""

    def __init__(self, tg: FakeTelegram, data_dir: Path, **overrides: Any) -> None:
        self.tg = tg
        self.data_dir = data_dir
        self.overrides = overrides
        self.app: Any = None

    def config(self) -> BotConfig:
        values: dict[str, Any] = {
            "token": self.tg.token,
            "base_url": self.tg.base_url,
            "base_file_url": self.tg.base_file_url,
            "data_dir": self.data_dir,
            "size_small": 64,
            "size_medium": 64,
            "size_large": 80,
            "status_interval_s": 0.2,
            "album_wait_s": 0.5,
            "admin_ids": [42],
            # A test that stops the bot mid-job means to interrupt it; the one that checks
            # the grace period sets its own.
            "stop_grace_s": 0,
        }
        values.update(self.overrides)
        return BotConfig(**values)

    async def start(self, executor: Executor | None = None) -> Any:
        executor = executor or LocalExecutor("cpu", timeout_s=60, steps=STEPS)
        self.app = build_application(self.config(), executor)
        await self.app.initialize()
        await self.app.start()
        await self.app.updater.start_polling(poll_interval=0.0, timeout=1)
        return self.app

    async def stop(self) -> None:
        if self.app is None:
            return
        app, self.app = self.app, None
        if app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()

    @property
    def service(self) -> Any:
        return self.app.bot_data["service"]


def msg_id(update: dict[str, Any]) -> int:
    """The message id of an update dict the fake returned for a user message."""
    return int(update["message"]["message_id"])


def chat_of(request: Any) -> int:
    return int(param(request, "chat_id"))


async def wait_text(
    tg: FakeTelegram, chat_id: int, contains: str, *, timeout: float = 15.0, count: int = 1, method: str = "sendMessage"
) -> list[Any]:
    """The bot's messages (or edits, with method=editMessageText) to ``chat_id`` containing ``contains``."""
    return await tg.wait_for(
        method,
        lambda r: chat_of(r) == chat_id and contains in text_of(r),
        timeout=timeout,
        count=count,
    )


async def wait_photo(tg: FakeTelegram, chat_id: int, *, count: int = 1, timeout: float = 30.0) -> list[Any]:
    return await tg.wait_for("sendPhoto", lambda r: chat_of(r) == chat_id, timeout=timeout, count=count)


def find_button(tg: FakeTelegram, chat_id: int, prefix: str) -> tuple[dict[str, Any], str]:
    """The latest bot message in ``chat_id`` with a button whose data starts with ``prefix``, and that data."""
    for message in reversed(tg.messages(chat_id)):
        markup = message.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            for b in row:
                data = b.get("callback_data", "")
                if data.startswith(prefix):
                    return message, data
    raise AssertionError(f"no button {prefix!r} in chat {chat_id}")


def photo_requests(tg: FakeTelegram, chat_id: int) -> list[Any]:
    return [r for r in tg.calls("sendPhoto") if chat_of(r) == chat_id]


def texts_to(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [text_of(r) for r in tg.calls("sendMessage") if chat_of(r) == chat_id]


def answers(tg: FakeTelegram) -> list[str]:
    return [str(param(r, "text") or "") for r in tg.calls("answerCallbackQuery")]


async def settle(seconds: float = 0.3) -> None:
    """Give the bot a moment to do (or, for negative checks, to not do) something."""
    await asyncio.sleep(seconds)


async def wait_until(condition: Any, *, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true (for state that no single request shows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def one_painting(tg: FakeTelegram, runner: BotRunner, user: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Start the bot (with config ``overrides``) on a slow engine and have ``user`` get one picture
    painting in their private chat, which it returns: the usual start of a test at a limit."""
    runner.overrides.update(overrides)
    await runner.start(LocalExecutor("cpu", timeout_s=120, steps=(400,)))
    chat = tg.private_chat(user)
    tg.send_photo(chat, user, image_bytes(seed=1), caption="starry-night")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    return chat
