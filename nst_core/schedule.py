"""How much work a picture is and how long it takes: the size it is painted at, the
coarse-to-fine schedule, what its steps cost, and the time left while it runs.

Torch-free on purpose: the executors read a job's schedule on the bot's event
loop to estimate queue times, and the loop must never import torch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from nst_core.images import ImageError, fit_long_side
from nst_core.settings import MAX_SIZE, Quality, StyleSettings

#: The shortest side of any image the network sees (photo at every scale, style image).
#: VGG19 max-pools four times before relu5_1, so under 16 px a pooling layer gets an
#: empty input and the job dies in torch; 32 px leaves relu5_1 a 2-px-wide band of
#: positions for its Gram matrix, and the 4-level Laplacian pyramid still gets three
#: levels (it stops halving below 16 px).
MIN_SIDE = 32


def fit_short_side(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(w, h) scaled so that the shorter side is ``short_side``, aspect kept.

    Enlarging rather than padding or stretching an image that is too thin: the
    picture stays the picture, only with more pixels, and the long side pays for it.
    """
    w, h = size
    s = short_side / min(w, h)
    return max(short_side, round(w * s)), max(short_side, round(h * s))


def paint_size(
    size: tuple[int, int], long_side: int, max_side: int | None = None, *, what: str = "photo"
) -> tuple[int, int]:
    """The (w, h) a picture of ``size`` is painted at when ``long_side`` is asked for.

    Usually the asked long side.  A picture so long and thin that its short side would
    drop under ``MIN_SIDE`` gets that short side instead, and a longer long side: the
    network cannot see less, and a 1000x60 photo should still be painted.  Only when
    even that long side would pass ``max_side`` (the device's limit; by default the
    engine's ceiling) is it refused, with an ``ImageError`` the user can act on.

    ``max_side`` decides refusals only, never the size, so a caller that does not know
    the device (a queue estimating times, the bot checking an upload) computes the
    same size as the painter.  Torch-free, for the bot.
    """
    fitted = fit_long_side(size, long_side)
    if min(fitted) >= MIN_SIDE:
        return fitted
    raised = fit_short_side(size, MIN_SIDE)
    limit = MAX_SIZE if max_side is None else max_side
    if max(raised) > limit:
        w, h = size
        raise ImageError(
            f"the {what} is too long and thin to paint ({w}×{h}); at most 1:{limit // MIN_SIDE} fits, so crop it first"
        )
    return raised


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
    """Scales from coarse to fine: each halves the long side, none below 128 px.

    Nor is any coarse scale's short side under ``MIN_SIDE``: a long, thin picture gets
    fewer coarse scales (its steps go to the ones it keeps) instead of one the network
    cannot see.
    """
    w, h = size
    table = tuple(steps) if steps is not None else STEPS[quality]
    sizes = [(w, h)]
    while len(sizes) < len(table) and max(sizes[-1]) // 2 >= MIN_COARSE_SIDE:
        sw, sh = sizes[-1]
        half = (max(1, round(sw / 2)), max(1, round(sh / 2)))
        if min(half) < MIN_SIDE:
            break
        sizes.append(half)
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
    """The schedule for a photo of ``size`` with these settings (no size set: the device's default).

    Sized by ``paint_size``, as ``stylize`` sizes it; raises its ``ImageError`` for a
    picture too long and thin to paint at all.
    """
    return plan(paint_size(size, settings.size or default_long_side), settings.quality, steps)


def plan_for(
    content: bytes, settings: StyleSettings, default_long_side: int, steps: Sequence[int] | None = None
) -> list[Scale] | None:
    """The schedule ``stylize`` will follow for this photo, from its header alone; None if
    unreadable, or too long and thin to paint (the job will be refused, in no time).

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
    try:
        return plan_at(size, settings, default_long_side, steps)
    except ImageError:
        return None


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
