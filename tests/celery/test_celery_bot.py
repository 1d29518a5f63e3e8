"""The bot on the Celery executor, through the fake Bot API: Redis outage, bot restart, many users.

The basic "a picture comes back" test lives with the bot's tests
(``tests/bot/test_bot_celery.py``); these are the fault cases from the bot's side.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from celery_harness import ROOT, RedisServer, Worker, start_worker, wait_idle

sys.path.insert(0, str(ROOT / "tests" / "bot"))
import bot_helpers as bh

from nst_core.celery_executor import CeleryExecutor

pytestmark = pytest.mark.slow


@pytest.fixture
async def runner(tg: Any, tmp_path: Path) -> AsyncIterator[Any]:
    r = bh.BotRunner(tg, tmp_path / "data")
    try:
        yield r
    finally:
        await r.stop()


def photos_in(tg: Any, chat_id: int) -> int:
    return sum(1 for m in tg.messages(chat_id) if m.get("photo"))


async def test_redis_outage_the_bot_keeps_answering_says_delayed_and_delivers_after(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    runner.overrides.update(max_queue=2)
    await runner.start(CeleryExecutor(redis_server.url, steps=(40,)))
    alice = tg.user(101, "Alice", username="alice")
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, bh.image_bytes(seed=1), caption="starry-night")
    await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=30)

    redis_server.stop()
    try:

        def told_delayed() -> bool:  # still painting: not "safe in the queue", which it is not in
            return any("can't show how far along it is" in bh.text_of(r) for r in tg.calls("editMessageText"))

        await bh.wait_until(told_delayed, timeout=15, what="a 'delayed' notice")
        assert not any("safe in the queue" in bh.text_of(r) for r in tg.calls("editMessageText"))
        tg.send_text(chat, alice, "/help")  # the bot still answers commands
        await bh.wait_text(tg, chat["id"], "How it works", timeout=15)
        # A picture sent now, and /queue, say the same, not a made-up "ready in about 22 s".
        tg.send_photo(chat, alice, bh.image_bytes(seed=2), caption="great-wave")
        await bh.wait_text(tg, chat["id"], "safe in the queue", timeout=15)
        tg.send_text(chat, alice, "/queue")
        (queue,) = await bh.wait_text(tg, chat["id"], "Your pictures", timeout=15)
        assert "briefly out of reach" in bh.text_of(queue) and "ready in about" not in bh.text_of(queue)
        admin = tg.user(42, "Admin")  # NST_ADMIN_IDS in the runner's config
        tg.send_text(tg.private_chat(admin), admin, "/stats")
        (stats,) = await bh.wait_text(tg, admin["id"], "<b>Stats</b>", timeout=15)
        assert "Held: queue unreachable" in bh.text_of(stats) and "last known" in bh.text_of(stats)
        # A full queue then promises no time either: nothing can say when it moves again.
        bob = tg.user(202, "Bob")
        tg.send_photo(tg.private_chat(bob), bob, bh.image_bytes(seed=3), caption="great-wave")
        (full,) = await bh.wait_text(tg, bob["id"], "My queue is full", timeout=15)
        assert "out of reach" in bh.text_of(full) and "try again later" in bh.text_of(full)
    finally:
        redis_server.start()
    first, _ = await bh.wait_photo(tg, chat["id"], count=2, timeout=90)
    assert bh.reply_to(first) == bh.msg_id(photo)
    await bh.settle(1.0)
    assert photos_in(tg, chat["id"]) == 2


async def test_a_picture_painting_through_a_bot_restart_is_not_said_to_be_back_in_the_queue(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    """Its worker painted on, yet the restarted bot said "I restarted; your picture is back in the queue"."""
    await runner.start(CeleryExecutor(redis_server.url, steps=(80,)))
    alice = tg.user(101, "Alice")
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, bh.image_bytes(seed=1), caption="starry-night")
    await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=30)
    await runner.stop()
    await runner.start(CeleryExecutor(redis_server.url, steps=(80,)))
    (said,) = await bh.wait_text(tg, chat["id"], "restarted", method="editMessageText", timeout=30)
    assert "the painter carried on" in bh.text_of(said), bh.text_of(said)
    await bh.wait_photo(tg, chat["id"], timeout=90)
    assert not any("I restarted; your picture is" in bh.text_of(r) for r in tg.calls("editMessageText"))


async def test_results_finished_while_the_bot_restarts_are_delivered_once(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    await runner.start(CeleryExecutor(redis_server.url, steps=(20,)))
    users = [tg.user(200 + i, f"User{i}") for i in range(2)]
    chats = [tg.private_chat(u) for u in users]
    sent = [
        tg.send_photo(c, u, bh.image_bytes(seed=i), caption="great-wave")
        for i, (c, u) in enumerate(zip(chats, users, strict=True))
    ]
    await bh.wait_text(tg, chats[0]["id"], "Painting", method="editMessageText", timeout=30)
    await runner.stop()  # the bot goes down while the workers paint
    await wait_idle(redis_server.client())

    await runner.start(CeleryExecutor(redis_server.url, steps=(20,)))
    await bh.wait_until(lambda: all(photos_in(tg, c["id"]) >= 1 for c in chats), timeout=60, what="both results")
    await bh.settle(1.0)
    replies = sorted(bh.reply_to(r) for r in tg.calls("sendPhoto"))
    assert replies == sorted(bh.msg_id(p) for p in sent)


async def test_two_workers_serve_ten_users_each_result_once(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    await runner.start(CeleryExecutor(redis_server.url, steps=(3,)))
    users = [tg.user(300 + i, f"Many{i}") for i in range(10)]
    chats = [tg.private_chat(u) for u in users]
    sent = [
        tg.send_photo(c, u, bh.image_bytes(seed=i * 2 + k), caption="the-kiss")
        for i, (c, u) in enumerate(zip(chats, users, strict=True))
        for k in range(2)
    ]
    await bh.wait_until(lambda: all(photos_in(tg, c["id"]) >= 2 for c in chats), timeout=120, what="20 results")
    await bh.settle(1.0)
    replies = sorted(bh.reply_to(r) for r in tg.calls("sendPhoto"))
    assert replies == sorted(bh.msg_id(p) for p in sent)


def bot_program(tg: Any, redis_url: str, tmp_path: Path, log: Any) -> subprocess.Popen:
    """The real ``nst-bot`` program, configured from the environment as in docker-compose.yml."""
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "TELEGRAM_BASE_FILE_URL": tg.base_file_url,
        "NST_EXECUTOR": "celery",
        "REDIS_URL": redis_url,
        "NST_DATA_DIR": str(tmp_path / "data"),
        "NST_SIZE_SMALL": "64",
        "NST_SIZE_MEDIUM": "64",
        "NST_SIZE_LARGE": "64",
    }
    # cwd: a folder without a .env, so that only the variables above configure it.
    return subprocess.Popen([sys.executable, "-m", "bot"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
async def test_the_nst_bot_program_with_workers_paints_without_loading_torch(
    tg: Any, redis_server: RedisServer, workers: list[Worker], tmp_path: Path
) -> None:
    """The scaled set-up's promise: the bot can live on a small machine, torch only on the workers."""
    log = (tmp_path / "bot.log").open("wb")
    bot = bot_program(tg, redis_server.url, tmp_path, log)
    try:
        alice = tg.user(401, "Alice")
        chat = tg.private_chat(alice)
        photo = tg.send_photo(chat, alice, bh.image_bytes(seed=4), caption="starry-night")
        (result,) = await bh.wait_photo(tg, chat["id"], timeout=120)
        assert bh.reply_to(result) == bh.msg_id(photo)
        assert bot.poll() is None, "the bot exited"
        libraries = Path(f"/proc/{bot.pid}/maps").read_text()
        assert "libtorch" not in libraries, "the bot process loaded torch"
    finally:
        bot.send_signal(signal.SIGINT)
        try:  # waited for off the loop: the fake Bot API it still talks to runs on this loop
            await asyncio.to_thread(bot.wait, 30)
        finally:
            bot.kill()
            log.close()


async def test_a_job_whose_record_redis_lost_is_put_back_in_line_and_delivered(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    """Redis without its append-only file, flushed, or evicting under maxmemory: the job's record
    and inputs are gone, no worker will report on it, and its user used to wait for good."""
    await runner.start(CeleryExecutor(redis_server.url, steps=(40,)))
    alice = tg.user(107, "Alice", username="alice")
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, bh.image_bytes(seed=7), caption="starry-night")
    await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=30)

    redis_server.client().flushall()  # everything: the job, its inputs, the event stream, Celery's queue

    # It was painting, and its painter may carry on and deliver it: not "lost" outright.
    (said,) = await bh.wait_text(tg, chat["id"], "put it back in line", method="editMessageText", timeout=30)
    assert "in case its painter stopped" in bh.text_of(said)
    (result,) = await bh.wait_photo(tg, chat["id"], timeout=90)
    assert bh.reply_to(result) == bh.msg_id(photo)
    await bh.settle(1.0)
    assert photos_in(tg, chat["id"]) == 1
    await wait_idle(redis_server.client())


async def test_a_picture_cancelled_while_redis_was_down_stays_cancelled_when_redis_comes_back_empty(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    """The cancel waited for Redis, which came back without the job: the bot took the job for
    lost, put it back in line and painted it, after telling its user "Cancelled"."""
    await runner.start(CeleryExecutor(redis_server.url, steps=(40,)))
    carol = tg.user(108, "Carol")
    chat = tg.private_chat(carol)
    tg.send_photo(chat, carol, bh.image_bytes(seed=8), caption="the-scream")
    await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=30)

    redis_server.stop()
    try:
        tg.send_text(chat, carol, "/cancel")
        # Not "Cancelled 1 picture" while its status says "Cancelling…" for the whole outage, nor
        # "the painter stops after its current step", which can't hear it until Redis is back.
        (said,) = await bh.wait_text(tg, chat["id"], "Cancelling 1 picture: the queue is out of reach", timeout=15)
        assert "nothing is sent" in bh.text_of(said)
        # Not "safe in the queue … it will continue shortly" after that reply.
        (status,) = await bh.wait_text(tg, chat["id"], "Cancelling…", method="editMessageText", timeout=15)
        assert "the painter stops once it's back" in bh.text_of(status)
    finally:  # it comes back empty, as one without its append-only file does
        shutil.rmtree(redis_server.directory / "appendonlydir", ignore_errors=True)
        (redis_server.directory / "appendonly.aof").unlink(missing_ok=True)
        redis_server.start()

    await bh.wait_text(tg, chat["id"], "Cancelled. ✋", method="editMessageText", timeout=30)
    await wait_idle(redis_server.client())
    await bh.settle(1.0)
    assert photos_in(tg, chat["id"]) == 0
    assert not any("put it back in line" in bh.text_of(r) for r in tg.calls("editMessageText"))


async def test_a_picture_cancelled_during_an_outage_is_not_sent_when_it_was_painted_meanwhile(
    tg: Any, runner: Any, redis_server: RedisServer, workers: list[Worker]
) -> None:
    """/cancel answered "Cancelled 1 picture" while the painters were out of reach; the painter,
    which could not read the cancel, finished, and the picture arrived 20 s later anyway."""
    await runner.start(CeleryExecutor(redis_server.url, steps=(40,)))
    alice = tg.user(101, "Alice", username="alice")
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, bh.image_bytes(seed=1), caption="starry-night")
    await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=30)
    client = redis_server.client()
    owner = next(
        w for w in workers if w.name == client.hget("nst:running", next(iter(client.hkeys("nst:running")))).decode()
    )
    redis_server.stop()
    try:
        tg.send_text(chat, alice, "/cancel")
        await bh.wait_text(tg, chat["id"], "Cancelling 1 picture: the queue is out of reach", timeout=15)
        await bh.wait_until(
            lambda: "retrying in" in owner.log.read_text(errors="replace"),
            timeout=60,
            what="the painting done, its outcome waiting for redis",
        )
    finally:
        redis_server.start()
    await bh.wait_text(tg, chat["id"], "Cancelled. ✋", method="editMessageText", timeout=30)
    await wait_idle(redis_server.client())
    await bh.settle(2.0)
    assert photos_in(tg, chat["id"]) == 0


async def test_with_no_worker_online_the_bot_says_so_and_paints_once_one_starts(
    tg: Any, runner: Any, tmp_path: Path, worker_logs: Path, preset_cache: Path
) -> None:
    """With every worker down, a photo was promised "Ready in about 30 s" and then waited
    without a word.  Own Redis: the module's workers would take the job at once."""
    server = RedisServer(tmp_path)
    server.start()
    workers: list[Worker] = []
    runner.overrides.update(max_queue=1)
    try:
        executor = CeleryExecutor(server.url, steps=(3,))
        await runner.start(executor)
        alice = tg.user(101, "Alice", username="alice")
        chat = tg.private_chat(alice)
        photo = tg.send_photo(chat, alice, bh.image_bytes(seed=1), caption="starry-night")
        (status,) = await bh.wait_text(tg, chat["id"], "You're next in the queue")
        assert "No painter is online" in bh.text_of(status) and "about" not in bh.text_of(status)
        tg.send_text(chat, alice, "/queue")
        (queue,) = await bh.wait_text(tg, chat["id"], "Your pictures")
        assert "waiting for a painter to come online" in bh.text_of(queue)
        tg.send_text(chat, alice, "/settings")
        (panel,) = await bh.wait_text(tg, chat["id"], "Your settings")
        assert "A picture takes" not in bh.text_of(panel)  # no worker has timed a step: no made-up price
        bob = tg.user(202, "Bob")
        tg.send_photo(tg.private_chat(bob), bob, bh.image_bytes(seed=2), caption="great-wave")
        (full,) = await bh.wait_text(tg, bob["id"], "My queue is full")
        assert "no painter is online" in bh.text_of(full) and "try again later" in bh.text_of(full)

        workers.append(start_worker(server, "late", worker_logs))
        (result,) = await bh.wait_photo(tg, chat["id"], timeout=90)
        assert bh.reply_to(result) == bh.msg_id(photo)
        await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText")  # the status moved on
        tg.send_text(chat, alice, "/settings")
        panel = (await bh.wait_text(tg, chat["id"], "Your settings", count=2))[-1]
        assert "A picture takes about" in bh.text_of(panel)  # now the workers' own timing

        # The only worker dies while painting: that picture no longer shows a frozen "Painting…".
        executor._steps = (60,)  # a few seconds: time to kill its worker half-way
        second = tg.send_photo(chat, alice, bh.image_bytes(seed=3), caption="the-scream")
        await tg.wait_for("sendMessage", lambda r: bh.reply_to(r) == bh.msg_id(second))
        status_id = next(
            m["message_id"]
            for m in tg.messages(chat["id"])
            if (m.get("reply_to_message") or {}).get("message_id") == bh.msg_id(second)
        )

        def painting_second(r: Any) -> bool:
            return int(bh.param(r, "message_id")) == status_id and "Painting" in bh.text_of(r)

        await tg.wait_for("editMessageText", painting_second, timeout=60)
        workers[0].kill()
        await bh.wait_text(tg, chat["id"], "No painter is online", method="editMessageText", timeout=30)
        tg.send_text(chat, alice, "/queue")
        queue = (await bh.wait_text(tg, chat["id"], "Your pictures", count=2))[-1]
        assert "stopped with its painter; waiting for a painter to come online" in bh.text_of(queue)
        workers.append(start_worker(server, "later", worker_logs))  # puts it back in line and paints it
        results = await bh.wait_photo(tg, chat["id"], count=2, timeout=120)
        assert bh.reply_to(results[1]) == bh.msg_id(second)
    finally:
        await runner.stop()
        for w in workers:
            w.terminate()
        server.stop()


async def test_a_cancel_the_bot_crashed_before_its_painter_confirmed_stays_a_cancel(
    tg: Any, tmp_path: Path, worker_logs: Path, preset_cache: Path
) -> None:
    """The cancel lived in the bot's memory only: after a SIGKILL during "Cancelling…" the next
    start put the picture back in line and delivered it, or, with the painter stopping later,
    left "Painting… 40%" and a Cancel button for good.  Own Redis, and a worker slow enough
    (400 steps) to be stopped (SIGSTOP) half-way, which holds the confirmation back."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    worker = start_worker(server, "crash", worker_logs, NST_STEPS="400")
    log = (tmp_path / "bot.log").open("ab")
    bots: list[subprocess.Popen] = []
    try:
        bots.append(bot_program(tg, server.url, tmp_path, log))
        alice = tg.user(101, "Alice", username="alice")
        chat = tg.private_chat(alice)
        tg.send_photo(chat, alice, bh.image_bytes(seed=1), caption="starry-night")
        await bh.wait_text(tg, chat["id"], "Painting", method="editMessageText", timeout=120)
        worker.process.send_signal(signal.SIGSTOP)
        status, data = bh.find_button(tg, chat["id"], "x:")
        tg.press_button(status, alice, data)
        await bh.wait_until(lambda: "Cancelling…" in bh.answers(tg), timeout=30, what="'Cancelling…'")
        bots[0].kill()  # SIGKILL: the bot never hears the painter confirm
        await asyncio.to_thread(bots[0].wait, 10)
        worker.process.send_signal(signal.SIGCONT)
        await bh.wait_until(lambda: ": cancelled" in worker.log.read_text(errors="replace"), timeout=60,
                            what="the painter to stop")  # fmt: skip

        bots.append(bot_program(tg, server.url, tmp_path, log))
        (closed,) = await bh.wait_text(tg, chat["id"], "Cancelled", method="editMessageText", timeout=120)
        assert int(bh.param(closed, "message_id")) == status["message_id"] and not closed.params.get("reply_markup")
        await bh.settle(3.0)
        assert photos_in(tg, chat["id"]) == 0
        assert not any("I restarted" in bh.text_of(r) for r in tg.calls("editMessageText"))
    finally:
        worker.process.send_signal(signal.SIGCONT)
        for bot in bots:
            bot.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(bot.wait, 30)
            finally:
                bot.kill()
        log.close()
        worker.kill()
        server.stop()
