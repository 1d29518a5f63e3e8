"""``nst-bot`` / ``python -m bot``: run the bot with polling (default) or a webhook.

PTB's ``run_polling``/``run_webhook`` handle SIGINT/SIGTERM: they stop taking
updates, let running handlers finish, then stop the service, which leaves
queued and interrupted jobs in SQLite for the next start.

A start that cannot get going (a data folder it cannot write or that another bot
is already using, a token Telegram refuses, a Bot API it cannot reach, a webhook
Telegram will not set or a port it cannot listen on) ends with one line saying
which, not a chain of tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from telegram import Update
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError

from bot.app import build_application, quiet_http_logs
from bot.config import BotConfig, ConfigError, load_config

log = logging.getLogger("bot")

#: How often a start retries a Bot API it cannot reach (PTB waits 1.5, 2.25, 3.4 s
#: between tries): enough to ride out a network that comes up just after the bot.
STARTUP_RETRIES = 3
_BOOTSTRAP_LOG = "Network Retry Loop (Bootstrap"


def _not_bootstrap_failure(record: logging.LogRecord) -> bool:
    """PTB logs a failed start with its traceback; ``main`` reports it in one line instead."""
    return not (record.levelno >= logging.ERROR and record.getMessage().startswith(_BOOTSTRAP_LOG))


def run(config: BotConfig) -> None:
    app = build_application(config)
    log.info("starting in %s mode; data in %s", config.mode, config.data_dir)
    if config.mode == "webhook":
        assert config.webhook_url is not None
        app.run_webhook(
            listen=config.webhook_listen,
            port=config.webhook_port,
            url_path=urlsplit(config.webhook_url).path.lstrip("/"),
            webhook_url=config.webhook_url,
            secret_token=config.webhook_secret.get_secret_value() if config.webhook_secret else None,
            allowed_updates=Update.ALL_TYPES,
            bootstrap_retries=STARTUP_RETRIES,
        )
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES, bootstrap_retries=STARTUP_RETRIES)


def _data_dir_problem(config: BotConfig) -> str | None:
    """Why the bot could not keep its database and results in NST_DATA_DIR, if it could not.

    Checked before Telegram is contacted, so the mistake is named instead of
    surfacing as a traceback from SQLite after the bot has already said hello.
    """
    if config.data_dir.exists() and not config.data_dir.is_dir():
        return f"NST_DATA_DIR={config.data_dir} is a file, not a folder"
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=config.data_dir):
            pass
    except OSError as exc:
        return f"cannot keep data in NST_DATA_DIR={config.data_dir} ({exc.strerror or exc})"
    return None


#: The file in NST_DATA_DIR whose lock says a bot is using the folder; it holds that bot's pid and host.
LOCK_NAME = "bot.lock"


def _data_dir_taken(data_dir: Path, held: contextlib.ExitStack) -> str | None:
    """Takes NST_DATA_DIR for this process, or says which bot already has it.

    Two bots on one folder would both re-queue the other's running jobs at start-up and
    paint every picture twice. The lock is ``flock``'s, held on a file kept open until
    ``held`` closes: the kernel drops it when the process ends however it ends (SIGKILL
    and crashes too), so a restart is never refused by a lock left behind.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock, and no guard
        return None
    path = data_dir / LOCK_NAME
    try:
        lock_file = held.enter_context(open(path, "a+", encoding="utf-8"))  # noqa: SIM115 -- held open on purpose
    except OSError as exc:
        return f"cannot use the lock file {path} ({exc.strerror or exc})"
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        return (
            f"another bot{_holder(lock_file.read())} is already running on NST_DATA_DIR={data_dir}; "
            "stop it first, or give this bot its own NST_DATA_DIR"
        )
    except OSError as exc:  # a filesystem without locks (some network mounts): run unguarded, as before
        log.warning("cannot lock %s (%s): nothing stops a second bot on this folder", path, exc.strerror or exc)
        return None
    lock_file.truncate(0)  # "a+" writes at the end, which is now the start
    lock_file.write(f"{os.getpid()} {socket.gethostname()}\n")
    lock_file.flush()
    return None


def _holder(lock_text: str) -> str:
    """`` (pid N)`` from what the bot holding the lock wrote, `` (pid N on HOST)`` if on another host
    (another container on the same volume); nothing if it has not written it yet."""
    pid, _, host = lock_text.strip().partition(" ")
    if not pid.isdigit():
        return ""
    return f" (pid {pid} on {host})" if host and host != socket.gethostname() else f" (pid {pid})"


def _database_problem(config: BotConfig) -> str | None:
    """Why the bot could not use the SQLite file in NST_DATA_DIR (e.g. another program's file)."""
    if not config.db_path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(config.db_path)) as db:
            db.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.Error as exc:
        return f"cannot use the database {config.db_path} ({exc}); move it away to start afresh"
    return None


def _device_problem(config: BotConfig) -> str | None:
    """Why the in-process painter could not use NST_DEVICE, before Telegram is contacted."""
    if config.executor != "local" or config.device == "auto":
        return None  # celery: the workers' device, not this process's
    from nst_core.device import pick_device

    try:
        pick_device(config.device)
    except ValueError as exc:
        return f"NST_DEVICE={config.device}: {exc} (use auto or cpu)"
    return None


class _Redacting(logging.Formatter):
    """Replaces the token wherever it appears in a log line, tracebacks included.

    PTB logs its Bot API URLs (which contain the token) at DEBUG, and an exception
    from the HTTP layer may quote a URL: filtering the finished text covers every case.
    """

    def __init__(self, token: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._token = token

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(self._token, "<token>")


def setup_logging(config: BotConfig) -> None:
    logging.basicConfig(level=config.log_level, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Redacting(config.token.get_secret_value()))
    quiet_http_logs()
    logging.getLogger("telegram.ext").addFilter(_not_bootstrap_failure)


def _api_host(config: BotConfig) -> str:
    """Where the bot talks to Telegram, without the path (which may hold the token)."""
    return urlsplit(config.base_url).netloc if config.base_url else "api.telegram.org"


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"nst-bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    with contextlib.ExitStack() as held:  # the data folder's lock, released when the bot is done
        if problem := (
            _data_dir_problem(config)
            or _data_dir_taken(config.data_dir, held)
            or _database_problem(config)
            or _device_problem(config)
        ):
            print(f"nst-bot: {problem}", file=sys.stderr)
            return 2
        return _run_and_report(config)


def _run_and_report(config: BotConfig) -> int:
    """Runs the bot until it is stopped; a start that fails is reported in one line."""
    try:
        run(config)
    except InvalidToken:
        print("nst-bot: Telegram refused TELEGRAM_BOT_TOKEN; copy it again from @BotFather", file=sys.stderr)
        return 2
    except TelegramError as exc:
        reason = str(exc).replace(config.token.get_secret_value(), "<token>")
        if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):  # PTB's BadRequest is a NetworkError
            line = (
                f"cannot reach the Telegram Bot API at {_api_host(config)} ({reason}); "
                "check the network, or TELEGRAM_BASE_URL if you set it"
            )
        else:  # e.g. a webhook address Telegram will not call
            line = f"Telegram refused to start the bot: {reason}"
        print(f"nst-bot: {line}", file=sys.stderr)
        return 1
    except OSError as exc:
        if config.mode != "webhook" or exc.filename is not None:
            raise
        print(
            f"nst-bot: cannot listen for webhooks on {config.webhook_listen}:{config.webhook_port} "
            f"({exc.strerror or exc}); change NST_WEBHOOK_PORT or NST_WEBHOOK_LISTEN",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
