"""A restart in the middle of a queue, start-up work, and the configuration's first-run failures."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bot_helpers import (
    ROOT,
    BotRunner,
    FakeTelegram,
    image_bytes,
    msg_id,
    param,
    reply_to,
    settle,
    text_of,
    wait_photo,
    wait_text,
    wait_until,
)

from bot.__main__ import STARTUP_RETRIES
from bot.config import BotConfig, ConfigError, load_config
from nst_core import presets
from nst_core.executor import LocalExecutor


async def test_restart_with_jobs_queued_delivers_each_result_once(
    tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict
) -> None:
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(30,)))
    alice_chat, bob_chat = tg.private_chat(alice), tg.private_chat(bob)
    photos = [
        tg.send_photo(alice_chat, alice, image_bytes(seed=1), caption="starry-night"),
        tg.send_photo(bob_chat, bob, image_bytes(seed=2), caption="great-wave"),
        tg.send_photo(alice_chat, alice, image_bytes(seed=3), caption="the-scream"),
    ]
    await wait_text(tg, alice_chat["id"], "queue", count=2)
    await wait_photo(tg, alice_chat["id"], timeout=60)  # the first one finishes before the restart
    await settle(0.3)
    await runner.stop()
    delivered_before = len([m for c in (alice_chat, bob_chat) for m in tg.messages(c["id"]) if m.get("photo")])
    assert delivered_before < 3

    await runner.start()  # a new Application on the same database
    await wait_until(
        lambda: sum(1 for c in (alice_chat, bob_chat) for m in tg.messages(c["id"]) if m.get("photo")) >= 3,
        timeout=60,
        what="three results",
    )
    await settle(1.0)
    sent = [r for r in tg.calls("sendPhoto")]
    assert sorted(reply_to(r) for r in sent) == sorted(msg_id(p) for p in photos)
    assert any("I restarted" in text_of(r) for r in tg.calls("editMessageText"))


async def test_graceful_stop_keeps_queued_jobs_in_the_database(
    tg: FakeTelegram, runner: BotRunner, alice: dict
) -> None:
    await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(400,)))
    chat = tg.private_chat(alice)
    tg.send_photo(chat, alice, image_bytes(), caption="the-kiss")
    await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
    await runner.stop()
    assert not any(m.get("photo") for m in tg.messages(chat["id"]))
    await runner.start()
    (result,) = await wait_photo(tg, chat["id"], timeout=60)
    assert "The Kiss" in text_of(result)


async def test_a_stop_finishes_and_sends_a_picture_that_is_nearly_done(
    tg: FakeTelegram, tmp_path: Path, alice: dict
) -> None:
    """Within the grace period the picture is sent before the bot exits, and never painted twice."""
    runner = BotRunner(tg, tmp_path / "data", stop_grace_s=120)
    try:
        await runner.start(LocalExecutor("cpu", timeout_s=60, steps=(150,)))
        chat = tg.private_chat(alice)
        tg.send_photo(chat, alice, image_bytes(), caption="the-kiss")
        await wait_text(tg, chat["id"], "Painting…", method="editMessageText")
        await runner.stop()
        (result,) = [r for r in tg.calls("sendPhoto")]
        assert "The Kiss" in text_of(result)

        await runner.start()  # the same database: nothing left to do
        await settle(2.0)
        assert len(tg.calls("sendPhoto")) == 1
        assert not any("I restarted" in text_of(r) for r in tg.calls("editMessageText"))
    finally:
        await runner.stop()


def test_missing_or_malformed_token_fails_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_BOT_TOKEN is not set" in lines[0]

    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN: is empty: put the token from @BotFather"):
        load_config(TELEGRAM_BOT_TOKEN=" ")  # .env.example copied without filling it in

    secret = "12345:not-a-real-token-but-secret?!"
    with pytest.raises(ConfigError) as info:
        load_config(TELEGRAM_BOT_TOKEN=secret)
    assert "TELEGRAM_BOT_TOKEN" in str(info.value) and secret not in str(info.value)
    assert "\n" not in str(info.value)


async def _run_bot_process(tmp_path: Path, **env: str) -> tuple[int, str]:
    """``python -m bot`` as a user starts it; its exit code and what it printed."""
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "NST_DEVICE": "cpu", **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tmp_path, env=full_env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_a_token_telegram_refuses_fails_with_one_line(tg: FakeTelegram, tmp_path: Path) -> None:
    wrong = "654321:ThisTokenWasRevokedByBotFather_xyz"
    code, stderr = await _run_bot_process(
        tmp_path, TELEGRAM_BOT_TOKEN=wrong, TELEGRAM_BASE_URL=tg.base_url, TELEGRAM_BASE_FILE_URL=tg.base_file_url
    )
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "nst-bot: Telegram refused TELEGRAM_BOT_TOKEN; copy it again from @BotFather"
    )
    assert wrong.split(":", 1)[1] not in stderr


async def test_a_bot_api_that_keeps_failing_is_retried_then_reported_in_one_line(tmp_path: Path) -> None:
    """A network that is not up yet gets a few tries; one that stays down, one line, no traceback."""
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    token = "123456:NoServerAnswersThisOne_abcdefghijk"
    try:
        code, stderr = await _run_bot_process(
            tmp_path, TELEGRAM_BOT_TOKEN=token, TELEGRAM_BASE_URL=f"http://127.0.0.1:{port}/bot"
        )
    finally:
        server.close()
    assert code == 1
    assert attempts == 1 + STARTUP_RETRIES
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"nst-bot: cannot reach the Telegram Bot API at 127.0.0.1:{port} (")
    assert "TELEGRAM_BASE_URL" in last
    assert token.split(":", 1)[1] not in stderr


async def test_a_webhook_telegram_will_not_set_fails_with_one_line(tg: FakeTelegram, tmp_path: Path) -> None:
    tg.fail("setWebhook", 400, "Bad Request: bad webhook: Failed to resolve host: Name or service not known", times=10)
    code, stderr = await _run_bot_process(tmp_path, **_webhook_env(tg, tmp_path, _free_port()))
    assert code == 1
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "nst-bot: Telegram refused to start the bot: Bad webhook: failed to resolve host: name or service not known"
    )
    assert len(tg.calls("setWebhook")) == 1 + STARTUP_RETRIES


async def test_a_webhook_port_in_use_fails_with_one_line(tg: FakeTelegram, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = await _run_bot_process(tmp_path, **_webhook_env(tg, tmp_path, port))
    assert code == 1
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"nst-bot: cannot listen for webhooks on 127.0.0.1:{port} (Address already in use); "
        "change NST_WEBHOOK_PORT or NST_WEBHOOK_LISTEN"
    )


async def test_a_data_folder_it_cannot_create_fails_with_one_line_before_telegram(
    tg: FakeTelegram, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    data_dir = tmp_path / "a-file" / "data"
    code, stderr = await _run_bot_process(
        tmp_path,
        TELEGRAM_BOT_TOKEN=tg.token,
        TELEGRAM_BASE_URL=tg.base_url,
        TELEGRAM_BASE_FILE_URL=tg.base_file_url,
        NST_DATA_DIR=str(data_dir),
    )
    assert code == 2
    assert stderr.strip().splitlines() == [f"nst-bot: cannot keep data in NST_DATA_DIR={data_dir} (Not a directory)"]
    code, stderr = await _run_bot_process(
        tmp_path, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_BASE_URL=tg.base_url, NST_DATA_DIR=str(tmp_path / "a-file")
    )
    assert code == 2  # it said "(File exists)"
    assert stderr.strip().splitlines() == [f"nst-bot: NST_DATA_DIR={tmp_path / 'a-file'} is a file, not a folder"]
    assert not tg.calls()  # nothing was said to Telegram


def _webhook_env(tg: FakeTelegram, tmp_path: Path, port: int) -> dict[str, str]:
    """A webhook bot on ``port`` that talks to the fake Bot API."""
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "TELEGRAM_BASE_FILE_URL": tg.base_file_url,
        "NST_MODE": "webhook",
        "NST_WEBHOOK_URL": "https://bot.invalid/hook",
        "NST_WEBHOOK_LISTEN": "127.0.0.1",
        "NST_WEBHOOK_PORT": str(port),
        "NST_DATA_DIR": str(tmp_path / "data"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_from_env_with_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv("NST_ADMIN_IDS", "1, 2 3")
    monkeypatch.setenv("NST_MAX_JOBS_PER_USER", "4")
    config = load_config()
    assert config.admin_ids == [1, 2, 3] and config.max_jobs_per_user == 4
    assert "A" * 35 not in repr(config)
    assert config.download_limit == 20 * 1024 * 1024
    local_server = BotConfig(token="123456:" + "A" * 35, base_url="http://localhost:8081/bot", max_file_bytes=1 << 30)
    assert local_server.download_limit == 1 << 30
    monkeypatch.setenv("NST_MODE", "webhook")
    with pytest.raises(ConfigError, match="NST_WEBHOOK_URL"):
        load_config()
    monkeypatch.setenv("NST_WEBHOOK_URL", "http://bot.example.com/hook")  # Telegram would refuse it
    with pytest.raises(ConfigError, match="https://"):
        load_config()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("NST_DEVICE", "banana", "NST_DEVICE: must be auto, cpu, cuda, cuda:N or mps"),
        ("REDIS_URL", "notaurl", "REDIS_URL: must start with redis://, rediss:// or unix://"),
        ("TELEGRAM_BASE_URL", "localhost:8081/bot", "TELEGRAM_BASE_URL: must start with http:// or https://"),
        ("NST_ADMIN_IDS", "alice", "NST_ADMIN_IDS: must be numeric Telegram ids separated by commas, not 'alice'"),
        ("NST_MAX_FILE_BYTES", str(3000 * 1024 * 1024), "NST_MAX_FILE_BYTES: Input should be less than or equal"),
        ("NST_SIZE_SMALL", "900", "configuration error: NST_SIZE_SMALL, NST_SIZE_MEDIUM and NST_SIZE_LARGE must go"),
        ("NST_MODE", "webhook", "configuration error: NST_MODE=webhook needs NST_WEBHOOK_URL"),
    ],
)
def test_each_bad_setting_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, says: str
) -> None:
    """They used to surface as tracebacks after Telegram was contacted (device, Redis URL, base
    URL), as "invalid literal for int()" (ids), or under a bogus name "NST_:" (whole-config checks)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert says in str(info.value) and "NST_:" not in str(info.value)
    assert "\n" not in str(info.value)


async def test_a_device_or_database_it_cannot_use_fails_with_one_line_before_telegram(
    tg: FakeTelegram, tmp_path: Path
) -> None:
    """NST_DEVICE=mps on Linux (or cuda without a GPU) ended in two tracebacks after the bot had
    contacted Telegram; another program's file as the database, in a SQLite traceback."""
    env = {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_BASE_URL": tg.base_url, "NST_DATA_DIR": str(tmp_path / "d")}
    code, stderr = await _run_bot_process(tmp_path, **env, NST_DEVICE="mps")
    assert code == 2
    assert stderr.strip().splitlines() == [
        "nst-bot: NST_DEVICE=mps: device 'mps' is not available on this machine (use auto or cpu)"
    ]
    (tmp_path / "d").mkdir(exist_ok=True)  # the first start made it
    (tmp_path / "d" / "bot.sqlite3").write_text("these are my notes, not a database\n")
    code, stderr = await _run_bot_process(tmp_path, **env)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith(
        f"nst-bot: cannot use the database {tmp_path / 'd' / 'bot.sqlite3'} (file is not a database)"
    )
    assert not tg.calls()  # nothing was said to Telegram


def test_preset_folders_set_in_dot_env_reach_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """nst_core.presets reads the process environment: set in .env, the folders were ignored, and the
    log then told the operator to set the very variable they had set."""
    from bot.app import build_application

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    source = os.environ["NST_PRESET_SOURCE_DIR"]  # the shared folder the tests fetch presets from
    for name in ("NST_PRESET_DIR", "NST_PRESET_SOURCE_DIR"):
        monkeypatch.delenv(name)  # as in a fresh process (restored after the test)
    (tmp_path / ".env").write_text(f"NST_PRESET_DIR={tmp_path / 'cache'}\nNST_PRESET_SOURCE_DIR={source}\n")
    build_application(load_config())
    assert presets.cache_dir() == tmp_path / "cache"
    presets.fetch("great-wave")  # from the source folder, hash-checked, into the cache
    assert presets.is_cached("great-wave") and (tmp_path / "cache").is_dir()


def test_cpu_precision_set_in_dot_env_reaches_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine reads NST_CPU_BF16 from the process environment, which a .env file does not touch."""
    from bot.app import default_executor
    from nst_core import device

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    before = os.environ.pop("NST_CPU_BF16", None)  # the process environment would win over .env
    try:
        for flag, expected in (("0", "float32"), ("1", "bfloat16")):
            os.environ.pop("NST_CPU_BF16", None)  # as in a fresh process
            (tmp_path / ".env").write_text(f"NST_CPU_BF16={flag}\n")
            default_executor(load_config())
            device.cpu_prefers_bf16.cache_clear()
            assert str(device.compute_dtype("cpu")) == f"torch.{expected}"
    finally:  # default_executor wrote to os.environ itself
        os.environ.pop("NST_CPU_BF16", None)
        if before is not None:
            os.environ["NST_CPU_BF16"] = before
        device.cpu_prefers_bf16.cache_clear()


def test_cuda_graphs_turned_off_in_dot_env_reach_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bot.app import default_executor
    from nst_core import device

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv("NST_CUDA_GRAPHS", "1")  # records the variable's state, to be restored after the test
    monkeypatch.delenv("NST_CUDA_GRAPHS")  # as in a fresh process
    default_executor(load_config())
    assert device.use_cuda_graphs("cuda")
    (tmp_path / ".env").write_text("NST_CUDA_GRAPHS=0\n")
    default_executor(load_config())
    assert not device.use_cuda_graphs("cuda")


async def test_token_never_reaches_the_logs(
    tg: FakeTelegram, bot: BotRunner, alice: dict, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = tg.private_chat(alice)
    tg.send_text(chat, alice, "/help")
    await wait_text(tg, chat["id"], "How it works")
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("bot", "telegram", "httpx", "httpcore", "nst_core")]
    assert ours, "the bot logged something at DEBUG"
    secret = tg.token.split(":", 1)[1]
    assert not any(secret in r.getMessage() for r in ours)


async def test_nst_bot_process_stops_on_sigterm_without_losing_jobs(
    tg: FakeTelegram, runner: BotRunner, alice: dict, tmp_path: Path
) -> None:
    """The real entry point (polling the fake server) keeps queued jobs across SIGTERM.

    It runs at DEBUG, where PTB logs its Bot API URLs (token and all), and rides out a
    Bot API that fails to answer for a while with a warning, not a traceback per retry.
    """
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "TELEGRAM_BASE_FILE_URL": tg.base_file_url,
        "NST_DATA_DIR": str(runner.data_dir),
        "NST_DEVICE": "cpu",
        "NST_SIZE_MEDIUM": "256",  # full schedule at 256 px: still running when the signal comes
        "NST_PRESET_DIR": os.environ["NST_PRESET_DIR"],
        "NST_PRESET_SOURCE_DIR": os.environ["NST_PRESET_SOURCE_DIR"],
        "NST_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "bot.log"  # a file, not a pipe: DEBUG output would fill a pipe nobody reads yet
    with log_path.open("w") as log_file:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=tmp_path, env=env, stderr=log_file)
    try:
        await tg.wait_for("setMyCommands", timeout=60)
        chat = tg.private_chat(alice)
        tg.send_photo(chat, alice, image_bytes(seed=1), caption="starry-night")
        tg.send_photo(chat, alice, image_bytes(seed=2), caption="great-wave")
        await wait_text(tg, chat["id"], "queue", count=2, timeout=60)
        tg.fail("getUpdates", 502, "Bad Gateway", times=2)
        tg.send_text(chat, alice, "/queue")  # ends the poll in flight; the next two fail
        warned = "cannot reach Telegram for updates (Bad Gateway); retrying"
        await wait_until(lambda: log_path.read_text().count(warned) == 2, timeout=60, what="two warnings")
        tg.send_text(chat, alice, "/queue")
        await wait_text(tg, chat["id"], "Your pictures", count=2, timeout=60)  # back once Telegram is
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = log_path.read_text()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Set Bot API URL" in stderr, "PTB logs its URLs at DEBUG: the check below would prove nothing"
    assert tg.token.split(":", 1)[1] not in stderr
    assert "Traceback" not in stderr
    assert "painting on cpu (" in stderr  # where jobs run, and in which precision
    assert not any(m.get("photo") for m in tg.messages(chat["id"]))

    await runner.start()  # the next start paints both
    results = await wait_photo(tg, chat["id"], count=2, timeout=60)
    assert {"The Starry Night", "Great Wave"} <= {
        name for r in results for name in ("The Starry Night", "Great Wave") if name in text_of(r)
    }


async def test_allow_list_keeps_strangers_out(
    tg: FakeTelegram, runner: BotRunner, alice: dict, bob: dict, caplog: pytest.LogCaptureFixture
) -> None:
    runner.overrides.update(allowed_user_ids=[alice["id"]])
    await runner.start()
    tg.send_text(tg.private_chat(bob), bob, "/start")
    await wait_text(tg, bob["id"], "this bot is private")
    tg.send_text(tg.private_chat(alice), alice, "/start")
    await wait_text(tg, alice["id"], "Hi Alice")

    # In a group a stranger's command to the bot is answered (it used to be silence); the rest is not its business.
    group = tg.group_chat()
    photo = tg.send_photo(group, bob, image_bytes())
    tg.send_text(group, bob, "what a nice bot")
    tg.send_text(group, bob, "/stylize@OtherBot")
    asked = tg.send_text(group, bob, "/stylize starry-night", reply_to=photo["message"])
    (refusal,) = await wait_text(tg, group["id"], "only some people may use this bot")
    assert reply_to(refusal) == msg_id(asked)
    await settle(0.5)
    assert len(tg.calls("sendMessage", group["id"])) == 1

    # A stranger adding it to a group is told why it won't answer them (it used to stay silent).
    theirs = tg.group_chat(-100777, "Bob's friends")
    tg.bot_membership(theirs, bob)
    (hello,) = await wait_text(tg, theirs["id"], "Only some people may use this bot")
    assert "Hi Bob" not in text_of(hello)

    # Inline mode has no chat: a stranger gets an empty answer, a user their results (no error either way).
    bobs = tg.inline_query(bob, "")["inline_query"]["id"]
    tg.inline_query(alice, "")
    answered = await tg.wait_for("answerInlineQuery", lambda r: True, count=2)
    (stranger,) = [r for r in answered if param(r, "inline_query_id") == bobs]
    (user,) = [r for r in answered if r is not stranger]
    assert not param(stranger, "button") and param(user, "button")  # an allowed user is offered the bot
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the gate failed on an inline query"


def test_webhook_mode_runs_the_webhook_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from telegram.ext import Application

    import bot.__main__ as entry

    seen: dict = {}
    monkeypatch.setattr(Application, "run_webhook", lambda self, **kw: seen.update(kw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv("NST_MODE", "webhook")
    monkeypatch.setenv("NST_WEBHOOK_URL", "https://bot.example.com/hook/telegram")
    monkeypatch.setenv("NST_WEBHOOK_SECRET", "s3cret-s3cret")
    monkeypatch.setenv("NST_WEBHOOK_PORT", "8080")
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    assert entry.main() == 0
    assert seen["webhook_url"] == "https://bot.example.com/hook/telegram"
    assert seen["url_path"] == "hook/telegram" and seen["port"] == 8080 and seen["secret_token"] == "s3cret-s3cret"


async def test_start_up_fills_an_empty_preset_cache_without_being_asked(
    runner: BotRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first person to open /styles or pick a painting must not wait for downloads."""
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("NST_PRESET_DIR", str(cache))
    assert not any(presets.is_cached(slug) for slug in presets.catalog())
    await runner.start()
    await wait_until(
        lambda: all(presets.is_cached(slug) for slug in presets.catalog()), what="every preset in the cache"
    )
