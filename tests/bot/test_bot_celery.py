"""The same bot on the Celery executor: jobs go through Redis to a real ``nst-worker``.

Nothing in the handlers changes; this proves the executor interface is the only seam.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bot_helpers import ROOT, BotRunner, FakeTelegram, image_bytes, msg_id, reply_to, text_of, wait_photo, wait_text

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("bot_celery_harness", ROOT / "tests" / "celery" / "celery_harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def worker_redis(tmp_path: Path) -> Iterator[Any]:
    harness = _harness()
    server = harness.RedisServer(tmp_path)
    server.start()
    worker = harness.start_worker(server, "bot-test-worker", tmp_path)
    try:
        harness.wait_ready(server, [worker])
        yield server
    finally:
        worker.terminate()
        server.stop()


async def test_private_flow_on_the_celery_executor(
    tg: FakeTelegram, runner: BotRunner, alice: dict, worker_redis: Any
) -> None:
    from nst_core.celery_executor import CeleryExecutor

    await runner.start(CeleryExecutor(worker_redis.url, steps=(3,), prefix="nst"))
    chat = tg.private_chat(alice)
    photo = tg.send_photo(chat, alice, image_bytes(), caption="great-wave")
    (result,) = await wait_photo(tg, chat["id"], timeout=90)
    assert "Great Wave" in text_of(result) and reply_to(result) == msg_id(photo)
    # The operator sees each worker by the name docs/scaling.md says /stats shows.
    admin = tg.user(42, "Admin")  # NST_ADMIN_IDS in the runner's config
    tg.send_text(tg.private_chat(admin), admin, "/stats")
    (stats,) = await wait_text(tg, admin["id"], "<b>Stats</b>")
    assert "• bot-test-worker: " in text_of(stats) and "1 done" in text_of(stats), text_of(stats)
