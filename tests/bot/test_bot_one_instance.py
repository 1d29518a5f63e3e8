"""One bot per data folder: a second ``python -m bot`` on the same NST_DATA_DIR is refused.

Two bots on one folder both re-queued each other's running jobs at start-up, painted
every picture twice and fought over the status messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot_helpers import ROOT, FakeTelegram, wait_text, wait_until

LOCK_NAME = "bot.lock"  # in NST_DATA_DIR: the lock, and the pid of the bot that holds it


def _env(tg: FakeTelegram, data_dir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "NST_TORCH_THREADS": "1",
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "TELEGRAM_BASE_FILE_URL": tg.base_file_url,
        "NST_DATA_DIR": str(data_dir),
        "NST_DEVICE": "cpu",
        "NST_PRESET_DIR": os.environ["NST_PRESET_DIR"],
        "NST_PRESET_SOURCE_DIR": os.environ["NST_PRESET_SOURCE_DIR"],
    }


async def _start(tg: FakeTelegram, data_dir: Path, log_path: Path) -> asyncio.subprocess.Process:
    """``python -m bot`` as an operator starts it, its stderr in ``log_path`` (a file: nobody drains a pipe)."""
    with log_path.open("w") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=log_path.parent, env=_env(tg, data_dir), stderr=log_file
        )


async def _polling(tg: FakeTelegram, count: int) -> None:
    """Until the ``count``-th bot to start is polling (PTB deletes the webhook, then polls)."""
    await tg.wait_for("getMe", count=count, timeout=120)
    await tg.wait_for("deleteWebhook", count=count, timeout=120)


async def test_a_second_bot_on_the_same_data_folder_is_refused_until_the_first_dies(
    tg: FakeTelegram, tmp_path: Path, alice: dict
) -> None:
    data_dir = tmp_path / "data"
    chat = tg.private_chat(alice)
    procs: list[asyncio.subprocess.Process] = []
    try:
        first = await _start(tg, data_dir, tmp_path / "first.log")
        procs.append(first)
        await _polling(tg, 1)

        second = await _start(tg, data_dir, tmp_path / "second.log")
        procs.append(second)
        await wait_until(
            lambda: second.returncode is not None or len(tg.calls("getMe")) > 1,
            timeout=120,
            what="the second bot to exit or to contact Telegram",
        )
        stderr = (tmp_path / "second.log").read_text()
        assert len(tg.calls("getMe")) == 1, f"the second bot contacted Telegram:\n{stderr[-2000:]}"
        await asyncio.wait_for(second.wait(), timeout=10)
        assert second.returncode == 2, stderr[-2000:]
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines() == [
            f"nst-bot: another bot (pid {first.pid}) is already running on NST_DATA_DIR={data_dir}; "
            "stop it first, or give this bot its own NST_DATA_DIR"
        ]

        assert first.returncode is None, (tmp_path / "first.log").read_text()[-2000:]
        tg.send_text(chat, alice, "/help")
        await wait_text(tg, chat["id"], "How it works", timeout=60)  # the first is still the bot

        first.kill()  # SIGKILL: nothing of it runs at exit, the kernel drops its lock
        await first.wait()
        assert (data_dir / LOCK_NAME).exists()  # left behind, and no obstacle

        third = await _start(tg, data_dir, tmp_path / "third.log")
        procs.append(third)
        await _polling(tg, 2)
        tg.send_text(chat, alice, "/start")
        await wait_text(tg, chat["id"], "Hi Alice", timeout=60)
        assert (data_dir / LOCK_NAME).read_text().split()[0] == str(third.pid)
        third.send_signal(signal.SIGTERM)
        await asyncio.wait_for(third.wait(), timeout=60)
        stderr = (tmp_path / "third.log").read_text()
        assert third.returncode == 0, stderr[-2000:]
        assert "Traceback" not in stderr
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
