"""The bot's configuration: typed, from the environment and ``.env``, checked at start-up.

Everything that differs between a laptop, a server and a test harness lives
here, so ``build_application`` needs nothing else.  A missing or malformed token
is the most common first-run mistake, so ``load_config`` turns it into one clear
line instead of a pydantic traceback (which would also echo the token).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nst_core.celery_store import check_redis_url

#: ``123456789:AA…`` — what @BotFather hands out (the secret part is 35 characters today;
#: tests and local servers use shorter ones, so the check is deliberately loose).
TOKEN_RE = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")

#: Telegram's cloud Bot API refuses downloads over 20 MB; a Local Bot API Server lifts that.
CLOUD_DOWNLOAD_LIMIT = 20 * 1024 * 1024
LOCAL_SERVER_DOWNLOAD_LIMIT = 2000 * 1024 * 1024

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _env(name: str) -> AliasChoices:
    """Accept the documented env name and the field name (tests pass fields by name)."""
    return AliasChoices(name, name.lower())


def _split_ids(value: object) -> object:
    """``"1, 2 3"`` → ``[1, 2, 3]``: ids come from env vars, where JSON lists are a nuisance."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        if bad := [p for p in parts if not re.fullmatch(r"-?\d+", p)]:
            raise ValueError(f"must be numeric Telegram ids separated by commas, not {bad[0]!r}")
        return [int(p) for p in parts]
    if isinstance(value, int):
        return [value]
    return value


class BotConfig(BaseSettings):
    """Every setting of the bot; see ``.env.example`` for the documented variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- Telegram -----------------------------------------------------------------------
    token: SecretStr = Field(validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    base_url: str | None = Field(default=None, validation_alias=_env("TELEGRAM_BASE_URL"))
    base_file_url: str | None = Field(default=None, validation_alias=_env("TELEGRAM_BASE_FILE_URL"))

    # --- Where things live ----------------------------------------------------------------
    data_dir: Path = Field(default=Path("data"), validation_alias=_env("NST_DATA_DIR"))
    #: The engine reads these two from the process environment; ``build_application`` copies
    #: them there, so that setting them in .env works as for every other variable.
    preset_dir: Path | None = Field(default=None, validation_alias=_env("NST_PRESET_DIR"))
    preset_source_dir: Path | None = Field(default=None, validation_alias=_env("NST_PRESET_SOURCE_DIR"))
    device: str = Field(default="auto", validation_alias=_env("NST_DEVICE"))
    torch_threads: int | None = Field(default=None, ge=1, validation_alias=_env("NST_TORCH_THREADS"))
    cpu_bf16: bool | None = Field(default=None, validation_alias=_env("NST_CPU_BF16"))  # None: by the CPU
    cuda_graphs: bool = Field(default=True, validation_alias=_env("NST_CUDA_GRAPHS"))
    executor: Literal["local", "celery"] = Field(default="local", validation_alias=_env("NST_EXECUTOR"))
    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))

    # --- Limits -------------------------------------------------------------------------------
    max_jobs_per_user: int = Field(default=2, ge=1, validation_alias=_env("NST_MAX_JOBS_PER_USER"))
    max_queue: int = Field(default=20, ge=1, validation_alias=_env("NST_MAX_QUEUE"))
    job_timeout_s: float = Field(default=600.0, gt=0, validation_alias=_env("NST_JOB_TIMEOUT_S"))
    #: At a stop, a picture expected to be done within this many seconds is finished and
    #: sent rather than painted again after the restart.  Docker waits 10 s by default.
    stop_grace_s: float = Field(default=5.0, ge=0, validation_alias=_env("NST_STOP_GRACE_S"))
    max_file_bytes: int | None = Field(
        default=None, ge=1, le=LOCAL_SERVER_DOWNLOAD_LIMIT, validation_alias=_env("NST_MAX_FILE_BYTES")
    )
    max_pixels: int = Field(default=50_000_000, ge=1, validation_alias=_env("NST_MAX_PIXELS"))
    size_small: int = Field(default=256, ge=64, le=4096, validation_alias=_env("NST_SIZE_SMALL"))
    size_medium: int = Field(default=512, ge=64, le=4096, validation_alias=_env("NST_SIZE_MEDIUM"))
    size_large: int = Field(default=1024, ge=64, le=4096, validation_alias=_env("NST_SIZE_LARGE"))

    # --- Who may use it ----------------------------------------------------------------
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list, validation_alias=_env("NST_ADMIN_IDS"))
    allowed_user_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias=_env("NST_ALLOWED_USER_IDS")
    )

    # --- How updates arrive -------------------------------------------------------------------
    mode: Literal["polling", "webhook"] = Field(default="polling", validation_alias=_env("NST_MODE"))
    webhook_url: str | None = Field(default=None, validation_alias=_env("NST_WEBHOOK_URL"))
    webhook_secret: SecretStr | None = Field(default=None, validation_alias=_env("NST_WEBHOOK_SECRET"))
    webhook_listen: str = Field(default="0.0.0.0", validation_alias=_env("NST_WEBHOOK_LISTEN"))
    webhook_port: int = Field(default=8443, ge=1, le=65535, validation_alias=_env("NST_WEBHOOK_PORT"))

    # --- Behaviour ------------------------------------------------------------------------
    status_interval_s: float = Field(default=3.0, ge=0, validation_alias=_env("NST_STATUS_INTERVAL_S"))
    #: All status messages in one group share one edit per this many seconds: a group
    #: gets ~20 messages a minute from a bot, and replies and results need most of them.
    group_status_interval_s: float = Field(default=6.0, ge=0, validation_alias=_env("NST_GROUP_STATUS_INTERVAL_S"))
    album_wait_s: float = Field(default=1.0, ge=0, validation_alias=_env("NST_ALBUM_WAIT_S"))
    draft_ttl_s: float = Field(default=1800.0, gt=0, validation_alias=_env("NST_DRAFT_TTL_S"))
    keep_results_days: float = Field(default=7.0, gt=0, validation_alias=_env("NST_KEEP_RESULTS_DAYS"))
    flood_retries: int = Field(default=3, ge=0, validation_alias=_env("NST_FLOOD_RETRIES"))
    log_level: str = Field(default="INFO", validation_alias=_env("NST_LOG_LEVEL"))

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        # The message never contains the value: it would end up in logs.
        if not value.get_secret_value().strip():  # .env.example copied as it is
            raise ValueError("is empty: put the token from @BotFather after TELEGRAM_BOT_TOKEN= in .env")
        if not TOKEN_RE.match(value.get_secret_value().strip()):
            raise ValueError("does not look like a bot token (expected digits, a colon and about 35 characters)")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not DEVICE_RE.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("base_url", "base_file_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # The message never contains the value: a base URL may end in the token's path.
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://localhost:8081/bot)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_redis_url(value)
        return value

    @field_validator("admin_ids", "allowed_user_ids", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        return _split_ids(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in logging.getLevelNamesMapping():
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _sizes_in_order(self) -> BotConfig:
        if not self.size_small <= self.size_medium <= self.size_large:
            raise ValueError("NST_SIZE_SMALL, NST_SIZE_MEDIUM and NST_SIZE_LARGE must go from small to large")
        return self

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> BotConfig:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("NST_MODE=webhook needs NST_WEBHOOK_URL (the public https address)")
        if self.mode == "webhook" and not str(self.webhook_url).lower().startswith("https://"):
            raise ValueError("NST_WEBHOOK_URL must be an https:// address: Telegram calls webhooks only over HTTPS")
        return self

    @property
    def download_limit(self) -> int:
        """Largest file the bot will try to fetch: the cloud API's 20 MB unless NST_MAX_FILE_BYTES says more.

        Not raised automatically for a custom TELEGRAM_BASE_URL: only a Local Bot API
        Server lifts the limit, and a URL alone doesn't say which kind of server it is.
        """
        return self.max_file_bytes if self.max_file_bytes is not None else CLOUD_DOWNLOAD_LIMIT

    @property
    def db_path(self) -> Path:
        return self.data_dir / "bot.sqlite3"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    def is_allowed(self, user_id: int) -> bool:
        return not self.allowed_user_ids or user_id in self.allowed_user_ids or user_id in self.admin_ids


class ConfigError(SystemExit):
    """A one-line, human-readable configuration error (exits with status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


_FIELD_ENV = {
    "token": "TELEGRAM_BOT_TOKEN",
    "base_url": "TELEGRAM_BASE_URL",
    "base_file_url": "TELEGRAM_BASE_FILE_URL",
    "redis_url": "REDIS_URL",
}


def _env_name(field: str) -> str:
    return _FIELD_ENV.get(field, f"NST_{field.upper()}")


def describe_error(exc: ValidationError) -> str:
    """One line naming each bad variable, never echoing its value."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        field = _env_name(field) if field and not field.isupper() else field  # "": the whole configuration
        if err["type"] == "missing" and field == "TELEGRAM_BOT_TOKEN":
            parts.append("TELEGRAM_BOT_TOKEN is not set (get one from @BotFather and put it in .env)")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {msg}" if field else msg)
    return "configuration error: " + "; ".join(parts)


def load_config(**overrides: object) -> BotConfig:
    """The configuration from env/.env (plus ``overrides``), or ConfigError with one clear line."""
    try:
        return BotConfig(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None
