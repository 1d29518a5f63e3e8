"""Queue ETAs: each job counted by its own size, in this machine's seconds.

Until these, every job was guessed at the median of recent ones, and at a fixed
30 s before the first had finished: on a 2-core CPU a default picture takes 35 s
to nearly two minutes, and a small fast one a few seconds, so users behind a big
picture were told far too little and users behind small ones far too much.
"""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from PIL import Image

from nst_core import runner
from nst_core.executor import (
    DurationModel,
    Hold,
    Job,
    JobCancelled,
    JobEvent,
    JobQueued,
    JobStarted,
    LocalExecutor,
    StyleRef,
)
from nst_core.schedule import StepCost, blend_eta, plan
from nst_core.settings import Quality, StyleSettings

DEFAULT = plan((512, 341), Quality.BALANCED)
SMALL = plan((128, 85), Quality.FAST)
LARGE = plan((1024, 683), Quality.BEST)
CPU_LIKE = StepCost(fixed_s=0.009, per_pixel_s=4.3e-6)  # what the warm-up measured on a Zen 4
GPU_LIKE = StepCost(fixed_s=0.004, per_pixel_s=1e-8)


def test_before_any_measurement_every_job_gets_the_default_guess() -> None:
    model = DurationModel(default_s=30.0)
    assert model.predict(DEFAULT) == model.predict(LARGE) == model.predict(None) == 30.0


def test_a_measured_step_cost_sizes_each_job() -> None:
    model = DurationModel()
    model.calibrate(CPU_LIKE)
    assert model.predict(DEFAULT) == pytest.approx(CPU_LIKE.seconds(DEFAULT))
    assert 30 < model.predict(DEFAULT) < 40
    assert model.predict(LARGE) > 6 * model.predict(DEFAULT) > 60 * model.predict(SMALL)


def test_finished_jobs_correct_the_measurement() -> None:
    model = DurationModel()
    model.calibrate(CPU_LIKE)
    before = model.predict(DEFAULT)
    model.add(2 * CPU_LIKE.seconds(SMALL), SMALL)  # the host turned out twice as slow
    assert model.predict(DEFAULT) == pytest.approx(2 * before)
    # A worker restarts and times the same step again: what the jobs taught still holds.
    model.calibrate(StepCost(CPU_LIKE.fixed_s, CPU_LIKE.per_pixel_s))
    assert model.predict(DEFAULT) == pytest.approx(2 * before)
    # A GPU worker takes over: the jobs ran twice as long as predicted, not at a CPU's pace.
    model.calibrate(GPU_LIKE)
    assert model.predict(DEFAULT) == pytest.approx(2 * GPU_LIKE.seconds(DEFAULT))


def test_without_a_measurement_finished_jobs_teach_the_rate() -> None:
    """The Celery executor's case: workers elsewhere, nothing timed in this process."""
    model = DurationModel()
    model.add(40.0, DEFAULT)
    assert model.predict(DEFAULT) == pytest.approx(40.0)
    assert model.predict(LARGE) > 6 * 40.0
    assert model.predict(None) == 40.0  # a job of unknown size: the typical one
    # Then the workers' heartbeats say what a step costs: seconds from now on, not units.
    model.calibrate(CPU_LIKE)
    assert model.predict(DEFAULT) == pytest.approx(CPU_LIKE.seconds(DEFAULT))


def test_a_running_jobs_time_left_moves_from_the_prediction_to_its_own_progress() -> None:
    # 5 % into a picture predicted at 40 s, whose own extrapolation still says 54 s.
    early = blend_eta(40.0, 2.0, 0.05, 54.0)
    assert early == pytest.approx(0.95 * 38.0 + 0.05 * 54.0)
    late = blend_eta(40.0, 36.0, 0.95, 1.0)  # running late: the progress knows better
    assert late == pytest.approx(0.05 * 4.0 + 0.95 * 1.0)
    assert blend_eta(None, 2.0, 0.05, 54.0) == 54.0  # nothing measured: the progress alone
    assert blend_eta(40.0, 50.0, 0.5, None) == 0.0  # over time and no progress figure yet


def _photo(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


async def test_a_small_job_behind_a_big_one_waits_for_the_big_one_only_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nst_core")
    events: list[JobEvent] = []

    async def on_event(event: JobEvent) -> None:
        events.append(event)

    executor = LocalExecutor("cpu")  # the real schedules: these jobs are cancelled, not finished
    await executor.start(on_event)
    try:
        for _ in range(600):  # the warm-up times a step before the first job
            if "a step on cpu" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "a step on cpu" in caplog.text, caplog.text
        style = (StyleRef(preset="starry-night"),)
        photo = _photo((1200, 800))
        await executor.submit(Job("default", photo, style, StyleSettings(size=512)))
        await executor.submit(Job("large", photo, style, StyleSettings(size=1024, quality=Quality.BEST)))
        await executor.submit(Job("small", photo, style, StyleSettings(size=128, quality=Quality.FAST)))

        def last(kind: type, job_id: str):
            return [e for e in events if isinstance(e, kind) and e.job_id == job_id][-1]

        for _ in range(100):
            if any(isinstance(e, JobStarted) for e in events):
                break
            await asyncio.sleep(0.05)
        running = last(JobStarted, "default").eta_s
        large, small = last(JobQueued, "large").eta_s, last(JobQueued, "small").eta_s
        assert running is not None and large is not None and small is not None
        # The big job waits for the running one and then takes several times as long;
        # the small one after it adds only its own few seconds.
        assert large > 5 * running, (running, large, small)
        assert 0 < small - large < 0.1 * running, (running, large, small)
        # /queue asks the executor, and hears the same figures.
        assert await executor.eta("small") == pytest.approx(small, rel=0.2)
        # The first status message's figure, before a job is handed over: the whole queue, then it.
        another = Job("another", photo, style, StyleSettings(size=128, quality=Quality.FAST))
        assert await executor.estimate(another) == pytest.approx(small + (small - large), rel=0.2)
        for job_id in ("small", "large", "default"):
            await executor.cancel(job_id)
        for _ in range(600):
            if len([e for e in events if isinstance(e, JobCancelled)]) == 3:
                break
            await asyncio.sleep(0.1)
    finally:
        await executor.stop()


def test_the_warm_up_times_the_engines_own_steps() -> None:
    from nst_core.runner import measure_step_cost

    # On a CPU one size, and every second of it per pixel.
    one = measure_step_cost("cpu")
    assert one.fixed_s == 0 and one.per_pixel_s > 0
    # Two (a GPU's): a line through both.
    two = measure_step_cost("cpu", sides=(64, 128))
    assert 0 < two.seconds(plan((64, 64), Quality.FAST, (1,))) < two.seconds(plan((128, 128), Quality.FAST, (1,)))


async def test_a_picture_sent_during_the_warm_up_starts_with_this_machines_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A photo sent while the bot was still warming up started "Painting… about 30 s left",
    the guess from before the step was timed, then jumped to 3 min; it took 2 min."""
    monkeypatch.setattr(runner, "_STEP_COSTS", {})  # timed here, as by a bot's first executor
    events: list[JobEvent] = []

    async def on_event(event: JobEvent) -> None:
        events.append(event)

    executor = LocalExecutor("cpu", steps=(5,))  # a picture of a few seconds at most
    await executor.start(on_event)
    try:
        job = Job("first", _photo((300, 200)), (StyleRef(preset="starry-night"),), StyleSettings(size=128))
        await executor.submit(job)  # the warm-up has only just begun
        for _ in range(600):
            if any(isinstance(e, JobStarted) for e in events):
                break
            await asyncio.sleep(0.1)
        (started,) = [e for e in events if isinstance(e, JobStarted)]
        assert started.eta_s is not None and started.eta_s < 10, started
        # First "warming up", with no time, not the 30 s guess from before the timing; then
        # this machine's estimate.
        queued = [e for e in events if isinstance(e, JobQueued)]
        assert queued[0] == JobQueued("first", 1, None, Hold.WARMING_UP), queued
        assert queued[-1].hold is None and queued[-1].eta_s is not None and queued[-1].eta_s < 10, queued
    finally:
        await executor.stop()


def test_a_pictures_price_is_its_schedule_in_measured_seconds_and_none_for_an_unpaintable_one() -> None:
    model = DurationModel()
    settings = StyleSettings(size=512)
    assert model.picture_seconds((640, 480), settings, 512, None) is None  # untimed: no made-up price
    model.calibrate(CPU_LIKE)
    expected = CPU_LIKE.seconds(plan((512, 384), Quality.BALANCED))
    assert model.picture_seconds((640, 480), settings, 512, None) == pytest.approx(expected)
    assert model.picture_seconds((5000, 20), settings, 512, None) is None  # too long and thin to paint


async def test_what_a_picture_costs_is_told_only_once_the_device_is_timed() -> None:
    """/settings shows each setting's price; before the warm-up timed a step, it has none to show."""
    executor = LocalExecutor("cpu")  # the product's schedules: their steps differ by quality
    photo = (640, 480)
    assert executor.picture_seconds(photo, StyleSettings(size=128)) is None
    await executor.start(_ignore)
    try:
        for _ in range(600):
            if executor.hold is None:
                break
            await asyncio.sleep(0.1)
        small = executor.picture_seconds(photo, StyleSettings(size=128, quality=Quality.FAST))
        large = executor.picture_seconds(photo, StyleSettings(size=512, quality=Quality.FAST))
        large_best = executor.picture_seconds(photo, StyleSettings(size=512, quality=Quality.BEST))
        assert small is not None and large is not None and large_best is not None
        assert 0 < small < large < large_best
    finally:
        await executor.stop()


async def _ignore(event: JobEvent) -> None:
    pass


def test_the_device_line_counts_the_threads_the_painter_is_given() -> None:
    """NST_TORCH_THREADS=1 logged "painting on cpu (2 threads)": torch's count before the
    painter's thread had applied the setting."""
    import torch

    threads = torch.get_num_threads() + 1
    assert f"cpu ({threads} threads" in LocalExecutor("cpu", threads=threads).device
    one = LocalExecutor("cpu", threads=1).device  # /stats shows it: "1 threads" was a slip
    assert "cpu (1 thread" in one and "1 threads" not in one
