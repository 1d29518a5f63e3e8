"""Fixtures for the bot's tests (helpers and ``BotRunner``: ``bot_helpers``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from bot_helpers import BotRunner, FakeTelegram

from bot import jobs


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Two torch threads on two shared cores thrash (10x slower); one is plenty at 64 px.

    Restored afterwards, so other test directories in the same run keep their setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def patient_cancel_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel's answer waits up to 1.5 s for the painting to stop, which takes 0.5 s at worst
    on a busy 2-core machine: with no more margin than that, a CI host's hiccup would turn the
    "Cancelled 1 picture" these tests wait for into "Cancelling…".  Tests of the slow case
    (painters out of reach) never see a confirmation, whatever the wait."""
    monkeypatch.setattr(jobs, "CANCEL_CONFIRM_S", 10.0)


@pytest.fixture
async def runner(tg: FakeTelegram, tmp_path: Path) -> AsyncIterator[BotRunner]:
    r = BotRunner(tg, tmp_path / "data")
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def bot(runner: BotRunner) -> BotRunner:
    """A running bot with default test settings."""
    await runner.start()
    return runner


@pytest.fixture
def alice(tg: FakeTelegram) -> dict[str, Any]:
    return tg.user(101, "Alice", username="alice")


@pytest.fixture
def bob(tg: FakeTelegram) -> dict[str, Any]:
    return tg.user(202, "Bob", username="bob")


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog
