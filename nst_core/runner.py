"""Running one executor ``Job`` to finished image bytes: shared by every executor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nst_core.device import compute_dtype
from nst_core.executor import Job
from nst_core.images import ImageError, encode, open_image
from nst_core.presets import PresetError, load_preset_image
from nst_core.schedule import StepCost
from nst_core.settings import SettingsError
from nst_core.transfer import Cancelled, StylizeError, stylize
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
        load_preset_image(ref.preset) if ref.preset else open_image(ref.image, what="style image")
        for ref in job.styles
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


#: Image sizes a step is timed at for ETAs: small enough to cost well under a second on a
#: 2-core CPU, far enough apart to separate a GPU's fixed cost per step from its cost per pixel.
CALIBRATION_SIZES = ((64, 64), (128, 128))


def measure_step_cost(device: str) -> StepCost:
    """Time one evaluation (VGG19 forward, gradient back to the image) at two sizes.

    Extrapolated, it predicted a default picture on a Zen 4 CPU within 6 % (34.7 s
    for 37.0 s) and a small fast one within 1 %; the executors correct the rest
    from the jobs they finish.
    """
    model = cached_features(device, dtype=compute_dtype(device))

    def step(width: int, height: int) -> float:
        x = torch.rand(1, 3, height, width, device=device, requires_grad=True)
        started = time.perf_counter()
        sum(f.float().square().mean() for f in model(x).values()).backward()
        if device.startswith("cuda"):  # GPUs run asynchronously: wait for the work, not its launch
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()
        return time.perf_counter() - started

    timings = []
    for width, height in CALIBRATION_SIZES:
        step(width, height)  # the first call at a size allocates and picks kernels
        # The fastest of three: a step is never faster than the device allows, often slower
        # when something else in the process (the bot starting up) wants the CPU.
        timings.append((width * height, min(step(width, height) for _ in range(3))))
    return StepCost.fit(*timings)


def user_message(exc: BaseException) -> str:
    """What to tell the user when a job fails."""
    if isinstance(exc, ImageError | SettingsError | PresetError | StylizeError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "the image was too large for the painter's memory; try a smaller /size"
    return "something went wrong in the painter; please try again"
