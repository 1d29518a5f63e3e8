"""``nst-bot`` / ``python -m bot``: run the bot with polling (default) or a webhook.

PTB's ``run_polling``/``run_webhook`` handle SIGINT/SIGTERM: they stop taking
updates, let running handlers finish, then stop the service, which leaves
queued and interrupted jobs in SQLite for the next start.
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit

from telegram import Update

from bot.app import build_application, quiet_http_logs
from bot.config import BotConfig, ConfigError, load_config

log = logging.getLogger("bot")


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
        )
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES)


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"nst-bot: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    quiet_http_logs()
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
