"""Running one executor ``Job`` to finished image bytes: shared by every executor."""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from nst_core.device import compute_dtype
from nst_core.executor import Job
from nst_core.images import ImageError, encode, open_image
from nst_core.presets import PresetError, load_preset_image
from nst_core.schedule import StepCost
from nst_core.settings import Quality, SettingsError, StyleSettings
from nst_core.transfer import Cancelled, StylizeError, StylizeProgress, stylize
from nst_core.vgg import cached_features

JobCancelledError = Cancelled


@dataclass(frozen=True)
class JobResult:
    image: bytes = field(repr=False)
    seconds: float
    width: int
    height: int
    format: str


def run_job(
    job: Job,
    *,
    device: str | None = None,
    progress: Callable[[float, float | None], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    steps: tuple[int, ...] | None = None,
) -> JobResult:
    """Decode the inputs, stylize, encode.  Raises ``Cancelled`` or a user-facing error.

    ``steps`` overrides the quality's schedule (tests and smoke runs use a handful of steps).
    """
    started = time.monotonic()
    content = open_image(job.content, what="photo")
    styles = [
        load_preset_image(ref.preset) if ref.preset else open_image(ref.image, what="style image") for ref in job.styles
    ]
    callback = None
    if progress is not None:

        def callback(p):
            progress(p.fraction, p.eta)

    result = stylize(content, styles, job.settings, device=device, progress=callback, cancel=cancel, steps=steps)
    data = encode(result, job.output_format)
    return JobResult(data, time.monotonic() - started, result.width, result.height, job.output_format)


def warm_up(device: str) -> float:
    """Load VGG19 onto ``device`` and run it once, so the first job starts as fast as the rest.

    Returns the seconds spent.  The in-process executor and ``nst-worker`` call it where
    their jobs will run (the worker thread, the worker process) before the first one.
    """
    started = time.monotonic()
    model = cached_features(device, dtype=compute_dtype(device))  # the one stylize will use
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64, device=device))
    return time.monotonic() - started


#: Square sizes whose steps are timed for ETAs: a default picture's coarse scale, and on a
#: GPU the next one as well, to tell its fixed cost per step from its cost per pixel.  On a
#: CPU nearly all of a step's cost is per pixel, and one size costs a fifth of two.
CPU_CALIBRATION_SIDES = (128,)
GPU_CALIBRATION_SIDES = (128, 256)
#: Steps at each size: the three between their four reports are timed.
CALIBRATION_STEPS = 4


def measure_step_cost(device: str, sides: tuple[int, ...] | None = None) -> StepCost:
    """Time the engine's own steps, on noise: what a picture's steps will cost.

    Real steps at a default picture's coarse scale, where bare passes through VGG19
    at 64 and 128 px (until these) said 0.75× of a default picture's time on a Zen 3
    CPU, whose bigger steps cost more per pixel and whose real steps also pay for
    the Gram matrices, the pyramid and L-BFGS; on a GPU the steps replay a CUDA
    graph, as a job's do.  The executors correct the rest from the jobs they finish.
    """
    if sides is None:
        sides = CPU_CALIBRATION_SIDES if device == "cpu" else GPU_CALIBRATION_SIDES
    noise = random.Random(0)
    timings = []
    for side in sides:
        content, style = (Image.frombytes("RGB", (side, side), noise.randbytes(side * side * 3)) for _ in range(2))
        reports: list[StylizeProgress] = []
        settings = StyleSettings(size=side, quality=Quality.FAST)
        stylize(content, style, settings, device=device, progress=reports.append, steps=(CALIBRATION_STEPS,))
        # From one report to the next (the set-up comes before the first); the median, as on a
        # GPU the first of these also records the CUDA graph that the others replay.
        steps = [later.elapsed - earlier.elapsed for earlier, later in itertools.pairwise(reports)]
        timings.append((side * side, statistics.median(steps)))
    if len(timings) == 1:  # all of it per pixel
        ((pixels, seconds),) = timings
        return StepCost(0.0, seconds / pixels)
    return StepCost.fit(timings[0], timings[-1])


#: ``step_cost``'s measurements in this process, by device, thread count and dtype.
_STEP_COSTS: dict[tuple[str, int, str], StepCost] = {}


def step_cost(device: str) -> StepCost:
    """``measure_step_cost``, once per process for a device, thread count and dtype.

    The hardware doesn't change between executors, and timing it takes seconds on a CPU:
    a process that starts executors again and again (the bot's tests start ~150) paid
    for it each time.
    """
    key = (device, torch.get_num_threads(), str(compute_dtype(device)))
    if key not in _STEP_COSTS:
        _STEP_COSTS[key] = measure_step_cost(device)
    return _STEP_COSTS[key]


def user_message(exc: BaseException) -> str:
    """What to tell the user when a job fails."""
    if isinstance(exc, ImageError | SettingsError | PresetError | StylizeError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "the image was too large for the painter's memory; try a smaller /size"
    return "something went wrong in the painter"
