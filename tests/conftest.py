"""Shared fixtures: the preset cache is seeded from ../shared/presets, never downloaded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NST_SHARED_DIR", ROOT.parent / "shared")).resolve()
SHARED_PRESETS = SHARED / "presets"
SHARED_CONTENT = SHARED / "content"


@pytest.fixture(scope="session", autouse=True)
def preset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test sees a private preset cache that fills itself from the shared copies."""
    if not SHARED_PRESETS.is_dir():
        pytest.exit(f"shared presets not found at {SHARED_PRESETS}; set NST_SHARED_DIR", returncode=2)
    cache = tmp_path_factory.mktemp("presets")
    os.environ["NST_PRESET_DIR"] = str(cache)
    os.environ["NST_PRESET_SOURCE_DIR"] = str(SHARED_PRESETS)
    return cache


@pytest.fixture(scope="session")
def content_dir() -> Path:
    return SHARED_CONTENT


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API server on a free local port, for the bot's tests."""
    async with FakeTelegram() as fake:
        yield fake
