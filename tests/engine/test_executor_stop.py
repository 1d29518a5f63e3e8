"""The in-process executor while a job's outcome is being reported.

The bot records an outcome in its own handler (a result file, a database write, then the
status message), over several awaits.  Meanwhile:

- ``stop()`` used to cancel the executor's loop wherever it was, even in the middle of
  that handler: a cancel confirmed a moment before a shutdown then left its row written
  but the status message reading "Cancelling…" for good;
- a cancel was told the job was still running, so the user read "Cancelling…" and then
  got the picture.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from nst_core import executor as executor_module
from nst_core.executor import Job, JobCancelled, JobDone, JobEvent, JobStarted, LocalExecutor, StyleRef
from nst_core.settings import StyleSettings


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 64), colour).save(buf, "PNG")
    return buf.getvalue()


async def test_stop_lets_the_outcome_being_reported_finish() -> None:
    started, reporting = asyncio.Event(), asyncio.Event()
    recorded: list[str] = []

    async def on_event(event: JobEvent) -> None:
        if isinstance(event, JobStarted):
            started.set()
        elif isinstance(event, JobCancelled):
            reporting.set()
            await asyncio.sleep(0.5)  # the handler's own awaits: a database write, a Telegram edit
            recorded.append(event.job_id)

    executor = LocalExecutor("cpu", steps=(400,))  # long enough to be cancelled while painting
    await executor.start(on_event)
    try:
        job = Job("j1", _png((200, 120, 40)), (StyleRef(image=_png((20, 60, 200))),), StyleSettings(size=64))
        await executor.submit(job)
        await asyncio.wait_for(started.wait(), 300)
        assert await executor.cancel(job.id)
        await asyncio.wait_for(reporting.wait(), 60)
    finally:
        await executor.stop()
    assert recorded == ["j1"], "the stop cut the cancel's report short"


async def test_a_job_being_reported_as_done_is_over_for_a_cancel() -> None:
    reporting = asyncio.Event()
    recorded: list[str] = []

    async def on_event(event: JobEvent) -> None:
        if isinstance(event, JobDone):
            reporting.set()
            await asyncio.sleep(0.5)  # the result written and recorded
            recorded.append(event.job_id)

    executor = LocalExecutor("cpu", steps=(2,))
    await executor.start(on_event)
    try:
        job = Job("j2", _png((200, 120, 40)), (StyleRef(image=_png((20, 60, 200))),), StyleSettings(size=64))
        await executor.submit(job)
        await asyncio.wait_for(reporting.wait(), 300)
        assert not await executor.cancel(job.id), "a finished job was said to be stopping"
        assert await executor.position(job.id) is None
    finally:
        await executor.stop()
    assert recorded == ["j2"]


async def test_a_caller_stuck_recording_an_outcome_does_not_hold_the_stop_for_good(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(executor_module, "REPORT_WAIT_S", 0.5)
    reporting = asyncio.Event()

    async def on_event(event: JobEvent) -> None:
        if isinstance(event, JobDone):
            reporting.set()
            await asyncio.Event().wait()  # a result written to a hung volume

    executor = LocalExecutor("cpu", steps=(2,))
    await executor.start(on_event)
    job = Job("j3", _png((200, 120, 40)), (StyleRef(image=_png((20, 60, 200))),), StyleSettings(size=64))
    await executor.submit(job)
    await asyncio.wait_for(reporting.wait(), 300)
    await asyncio.wait_for(executor.stop(), 30)
    assert "still being recorded" in caplog.text
