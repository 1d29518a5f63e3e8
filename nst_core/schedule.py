"""How much work a picture is and how long it takes: the coarse-to-fine schedule,
what its steps cost, and the time left while it runs.

Torch-free on purpose: the executors read a job's schedule on the bot's event
loop to estimate queue times, and the loop must never import torch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from nst_core.images import fit_long_side
from nst_core.settings import Quality, StyleSettings


@dataclass(frozen=True)
class Scale:
    width: int
    height: int
    steps: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


#: Steps per scale, coarsest first; the last entry is for the output size.  A
#: coarse step costs a quarter of the next finer one, so "balanced" at 512 px
#: costs about 44 full-size steps, of which 100 of 130 run at low resolution.
#: The finest scale needs ~30 steps whatever came before (benchmarks/RESULTS.md):
#: the coarse scales buy large-scale structure, not fewer fine steps.
STEPS = {
    Quality.FAST: (30, 20, 15),
    Quality.BALANCED: (60, 40, 30),
    Quality.BEST: (120, 80, 60),
}
MIN_COARSE_SIDE = 128


def plan(size: tuple[int, int], quality: Quality, steps: Sequence[int] | None = None) -> list[Scale]:
    """Scales from coarse to fine: each halves the long side, none below 128 px."""
    w, h = size
    table = tuple(steps) if steps is not None else STEPS[quality]
    sizes = [(w, h)]
    while len(sizes) < len(table) and max(sizes[-1]) // 2 >= MIN_COARSE_SIDE:
        sw, sh = sizes[-1]
        sizes.append((max(1, round(sw / 2)), max(1, round(sh / 2))))
    sizes.reverse()
    used = table[len(table) - len(sizes) :]
    # An output too small for any coarse scale gets half the coarse budget at full size
    # instead: its steps are cheap, and the finest scale is where the loss is decided.
    if len(sizes) == 1 and len(table) > 1:
        used = (used[0] + sum(table[:-1]) // 2,)
    return [Scale(sw, sh, n) for (sw, sh), n in zip(sizes, used, strict=True)]


def plan_at(
    size: tuple[int, int], settings: StyleSettings, default_long_side: int, steps: Sequence[int] | None = None
) -> list[Scale]:
    """The schedule for a photo of ``size`` with these settings (no size set: the device's default)."""
    return plan(fit_long_side(size, settings.size or default_long_side), settings.quality, steps)


def plan_for(
    content: bytes, settings: StyleSettings, default_long_side: int, steps: Sequence[int] | None = None
) -> list[Scale] | None:
    """The schedule ``stylize`` will follow for this photo, from its header alone; None if unreadable.

    EXIF rotation is ignored: it swaps width and height, which changes neither the
    area nor the long side, so the work is the same.
    """
    try:
        with Image.open(io.BytesIO(content)) as img:
            size = img.size
    except Exception:  # the job will fail with a proper message; no estimate is needed
        return None
    if min(size) < 1:
        return None
    return plan_at(size, settings, default_long_side, steps)


@dataclass(frozen=True)
class StepCost:
    """Seconds per optimisation step on one device: a fixed part plus a part per pixel.

    The fixed part is what a GPU spends at small sizes no matter the pixels; on a
    CPU nearly everything is per pixel.  The default is no measurement at all:
    one "second" per pixel-step, a unit that finished jobs convert into seconds.
    """

    fixed_s: float = 0.0
    per_pixel_s: float = 1.0

    def seconds(self, schedule: Sequence[Scale]) -> float:
        return sum(s.steps * (self.fixed_s + self.per_pixel_s * s.pixels) for s in schedule)

    @classmethod
    def fit(cls, small: tuple[int, float], large: tuple[int, float]) -> StepCost:
        """The line through two (pixels, seconds per step) measurements."""
        (p1, t1), (p2, t2) = small, large
        per_pixel = max(0.0, (t2 - t1) / (p2 - p1))
        return cls(max(0.0, t2 - per_pixel * p2), per_pixel)


def blend_eta(
    predicted_s: float | None, elapsed_s: float, fraction: float, progress_eta_s: float | None
) -> float | None:
    """Time left for a running job: the prediction early on, the job's own progress later.

    The job's extrapolation (elapsed / fraction) runs high at first: setting up each
    scale and the small coarse steps cost more than their share of the pixels, so at
    5 % of a default picture it said 54 s where 35 s were left.  The prediction, made
    before the start, is right on average but blind to this job; weighting it by
    the work left hands over smoothly.
    """
    if predicted_s is None:
        return progress_eta_s
    prior = max(predicted_s - elapsed_s, 0.0)
    if progress_eta_s is None:
        return prior
    return (1 - fraction) * prior + fraction * progress_eta_s
