"""Gatys-style neural style transfer: the whole algorithm in one module.

The objective is the classic one (Gatys, Ecker & Bethge 2016): match VGG19
relu4_2 activations of the photo (content) and Gram matrices of relu1_1 …
relu5_1 of the painting (style), plus a small total-variation term, by
optimising the pixels themselves with L-BFGS.

What makes it fast is the route to the optimum, not the objective:

* **Start close.** The photo recoloured to the painting's colour statistics is
  much nearer the optimum than the photo itself.
* **Coarse to fine.** Most steps run at a quarter or a sixteenth of the pixels;
  each finer scale starts from the upsampled result *plus the photo's own fine
  detail* (plain upsampling would throw away exactly the high frequencies the
  relu1_1 Gram matrix asks for).
* **A Laplacian-pyramid parametrisation.** L-BFGS starts from an identity
  Hessian guess, which in pixel space makes low frequencies crawl; optimising
  the pyramid's levels instead moves them at the pace of the fine ones.  Each
  coarser level is damped by ``LEVEL_GAIN``: undamped, the coarse levels would
  outrun the fine ones instead.
* **On a GPU, one launch per step.** Each evaluation is recorded once as a CUDA
  graph and replayed: launching its kernels one by one from Python cost more than
  the GPU's work.

Losses are normalised by the energy of their targets, so one set of default
weights works at every resolution and for every painting.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from nst_core import device as devices
from nst_core.images import fit_area, open_image, resize
from nst_core.schedule import MIN_SIDE, Scale, fit_short_side, paint_size, plan
from nst_core.settings import Optimizer, StyleSettings
from nst_core.vgg import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures, cached_features

log = logging.getLogger(__name__)

ImageInput = Image.Image | bytes | str | Path
CancelCheck = threading.Event | Callable[[], bool]


class StylizeError(RuntimeError):
    """The stylization cannot run as asked; the message is meant for the end user."""


class Cancelled(Exception):
    """The caller's ``cancel`` check fired; raised between optimisation steps."""


@dataclass(frozen=True)
class StylizeProgress:
    """Handed to the ``progress`` callback after every optimisation step."""

    scale: int  # 1-based index of the current scale
    scales: int
    width: int
    height: int
    step: int  # steps done, over all scales
    total_steps: int
    loss: float  # the objective at the current scale
    content_loss: float
    style_loss: float
    tv_loss: float
    elapsed: float
    eta: float | None  # seconds left, estimated from the cost of the steps done so far
    fraction: float  # 0..1, weighted by the cost (pixels) of each step
    #: The image just evaluated, (1, 3, H, W) float32, not clamped; shared, not copied:
    #: on a GPU the next step overwrites it in place (CUDA graphs), so copy what you keep.
    image: torch.Tensor | None = field(default=None, repr=False, compare=False)


# ---------------------------------------------------------------------------
# The objective


class _Gram(torch.autograd.Function):
    """``a @ aᵀ`` in float32, with a backward pass a fraction of the cost of autograd's.

    Autograd treats ``a`` and ``aᵀ`` as two inputs: two matrix products and a sum.
    The Gram matrix is symmetric, so the gradient is ``(g + gᵀ) @ a``, one product,
    computed in ``a``'s dtype and memory layout: for a bfloat16 network that is the
    gradient it needs, with no float32 copy of the features kept and no conversion
    after.  On a CPU the style terms drop from a sixth of a step to under a tenth
    (benchmarks/RESULTS.md).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:  # a: (n, channels, positions), any strides
        ctx.save_for_backward(a)
        f = a.float()
        return f @ f.transpose(1, 2)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        s = (g + g.transpose(1, 2)).to(a.dtype)
        if a.stride(1) == 1:  # positions-major (channels-last features): answer in that layout
            return (a.transpose(1, 2) @ s).transpose(1, 2)
        return s @ a


def gram(features: torch.Tensor) -> torch.Tensor:
    """Channel co-activations averaged over positions: resolution-independent.

    Computed in float32 even when the network runs in bfloat16: half-precision sums over a
    million positions overflow.  Channels-last features are read in place, not transposed.
    """
    n, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last):
        a = features.permute(0, 2, 3, 1).reshape(n, h * w, c).transpose(1, 2)
    else:
        a = features.reshape(n, c, h * w)
    return _Gram.apply(a) / (h * w)


@dataclass
class Objective:
    """Per-layer weights of content, style and TV terms.

    With ``normalize`` each term is divided by the energy of its target
    (mean square of the target features or Gram), which makes the terms
    comparable across layers, paintings and sizes.  Without it the weights are
    used as given, which is how other implementations (e.g. pastiche) define
    theirs, so that they can be reproduced exactly.
    """

    content_layers: dict[str, float]
    style_layers: dict[str, float]
    tv_weight: float = 0.0
    normalize: bool = True

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))


def default_objective(strength: int, tv_weight: float = 1.0) -> Objective:
    """Strength 1..10 moves the style/content balance by a constant factor per step."""
    style = 2.0 ** ((strength - 5) * 0.75) * 30.0
    per_layer = style / len(STYLE_LAYERS)
    return Objective(
        content_layers={layer: 1.0 for layer in CONTENT_LAYERS},
        style_layers={layer: per_layer for layer in STYLE_LAYERS},
        tv_weight=tv_weight * 3.0,
        normalize=True,
    )


class Loss(torch.nn.Module):
    """The objective at one scale, with its targets computed once."""

    def __init__(
        self,
        model: VGGFeatures,
        objective: Objective,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float],
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        with torch.no_grad():
            feats = model(content, objective.content_layers)
            self.content_targets = {k: v.detach().float() for k, v in feats.items()}
            self.gram_targets: dict[str, torch.Tensor] = {}
            for style, w in zip(styles, blend, strict=True):
                for layer, g in model(style, objective.style_layers).items():
                    g = gram(g) * w
                    self.gram_targets[layer] = self.gram_targets.get(layer, 0) + g
        self.content_scale = {
            k: 1.0 / (v.square().mean().item() + 1e-8) if objective.normalize else 1.0
            for k, v in self.content_targets.items()
        }
        self.style_scale = {
            k: 1.0 / (v.square().mean().item() + 1e-8) if objective.normalize else 1.0
            for k, v in self.gram_targets.items()
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective and its parts, as tensors: reading them would wait for the GPU."""
        obj = self.objective
        feats = self.model(x, obj.layers)
        zero = torch.zeros((), device=x.device)
        content = sum(
            (
                w * self.content_scale[k] * F.mse_loss(feats[k].float(), self.content_targets[k])
                for k, w in obj.content_layers.items()
            ),
            zero,
        )
        style = sum(
            (
                w * self.style_scale[k] * F.mse_loss(gram(feats[k]), self.gram_targets[k])
                for k, w in obj.style_layers.items()
            ),
            zero,
        )
        total = content + style
        tv = zero
        if obj.tv_weight:
            tv = obj.tv_weight * (
                (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()
            )
            total = total + tv
        return total, {"content": content.detach(), "style": style.detach(), "tv": tv.detach()}


# ---------------------------------------------------------------------------
# Image parametrisation


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]."""
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(img.height, img.width, 3).permute(2, 0, 1).unsqueeze(0).float().div_(255).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    x = x.detach().squeeze(0).clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _half(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", antialias=True, align_corners=False)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pyramid_split(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid, finest level first; ``pyramid_join`` inverts it exactly."""
    out = []
    for _ in range(levels - 1):
        if min(x.shape[-2:]) < 16:
            break
        low = _half(x)
        out.append(x - _up(low, x.shape[-2:]))
        x = low
    out.append(x)
    return out


def pyramid_join(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    x = levels[-1]
    for band in reversed(levels[:-1]):
        x = _up(x, band.shape[-2:]) + band
    return x


def match_color(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` with the per-channel mean and standard deviation of ``reference``."""
    xm, xs = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True) + 1e-5
    rm, rs = reference.mean((2, 3), keepdim=True), reference.std((2, 3), keepdim=True)
    return ((x - xm) / xs * rs + rm).clamp(0, 1)


# YIQ: luminance in the first channel, chroma in the other two (Gatys et al. 2017, colour preservation).
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(x), x)


def _rgb(y: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_YIQ).to(y), y)


def luminance_only(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """Greyscale (3 equal channels), optionally with the luminance mean/std of ``like``."""
    y = _yiq(x)[:, :1]
    if like is not None:
        ly = _yiq(like)[:, :1]
        y = (y - y.mean()) / (y.std() + 1e-5) * ly.std() + ly.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def with_chroma_of(luma_image: torch.Tensor, colour_source: torch.Tensor) -> torch.Tensor:
    src = _yiq(colour_source)
    out = torch.cat([_yiq(luma_image)[:, :1], src[:, 1:]], dim=1)
    return _rgb(out).clamp(0, 1)


# ---------------------------------------------------------------------------
# The driver


PYRAMID_LEVELS = 4
#: Scale of each coarser pyramid level's parameters relative to the next finer one.
#: A level at half the resolution reaches the image through a 2x upsampling whose
#: adjoint sums about four pixels' gradients, so under L-BFGS's identity metric an
#: undamped level moves four times faster than the one below it; a gain g makes
#: that 4g².  0.7 (2x per level) took 34 steps instead of 44 to pastiche's loss at
#: ~512² and gave 0-9 % lower losses for the same steps on four pairs; 0.5 (1x)
#: was as fast on some pairs but slower on the flat-coloured ones
#: (benchmarks/RESULTS.md).
LEVEL_GAIN = 0.7
LBFGS_HISTORY = 20
#: Fraction of Polyak's step (loss / |grad|², assuming an optimum near zero) for the first step.
FIRST_STEP = 0.5


def _as_image(x: ImageInput, what: str) -> Image.Image:
    return x.convert("RGB") if isinstance(x, Image.Image) else open_image(x, what=what)


def _is_cancelled(cancel: CancelCheck | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def _check_memory(device: str, size: tuple[int, int], n_styles: int, style_scale: float) -> None:
    w, h = size
    need = w * h * devices.BYTES_PER_PIXEL * (1 + 0.25 * n_styles * style_scale**2)
    have = devices.available_memory(device)
    if need > have:
        largest = devices.max_size(device, min(w, h) / max(w, h))
        raise StylizeError(
            f"{w}x{h} needs about {need / 2**30:.1f} GiB of memory on {device} and only "
            f"{have / 2**30:.1f} GiB is free; the largest size that fits is about {largest} px"
        )


#: Longest side over shortest side a style image is used at; longer strips are centre-cropped.
MAX_STYLE_ASPECT = 4.0


def _crop_style(img: Image.Image) -> Image.Image:
    """A strip of a painting cut, about its centre, to at most ``MAX_STYLE_ASPECT``:1.

    The style loss reads only Gram matrices, averages over positions, so a middle
    stretch of a strip carries its texture statistics as well as the whole does.
    Uncut, a 4000x20 strip resized to a 256-px photo's area would be 16 px high (8 at
    the coarse scale), too thin for the network; scaled up to ``MIN_SIDE`` it would
    be 6400x32, four times the photo's pixels spent on one row of brush strokes.
    """
    w, h = img.size
    if max(w, h) <= MAX_STYLE_ASPECT * min(w, h):
        return img
    if w > h:
        cw = round(h * MAX_STYLE_ASPECT)
        left = (w - cw) // 2
        return img.crop((left, 0, left + cw, h))
    ch = round(w * MAX_STYLE_ASPECT)
    top = (h - ch) // 2
    return img.crop((0, top, w, top + ch))


def style_size(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """Where a (cropped) style image is resized to: the asked area, but never under ``MIN_SIDE``.

    Too small an area (a small photo, a small ``style_scale``) gets the short side
    ``MIN_SIDE`` instead: more painting than asked, rather than a network that fails.
    """
    fitted = fit_area(size, pixels)
    return fitted if min(fitted) >= MIN_SIDE else fit_short_side(size, MIN_SIDE)


def _finest_band(x: torch.Tensor) -> torch.Tensor:
    return x - _up(_half(x), x.shape[-2:])


def _initial_image(photo: torch.Tensor, style: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Where a scale starts: the photo in the painting's colours, or the coarser result.

    The coarser result, upsampled, lacks the finest octave; it gets the photo's
    finest band back, rescaled to the painting's energy in that band, which
    starts the fine scale at about half the objective of plain upsampling.
    """
    recoloured = match_color(photo, style)
    if previous is None:
        return recoloured
    detail = _finest_band(recoloured)
    target_std = _finest_band(style).std((2, 3), keepdim=True)
    detail = detail / (detail.std((2, 3), keepdim=True) + 1e-5) * target_std
    return (_up(previous, photo.shape[-2:]) + detail).clamp(0, 1)


#: Strength of the starting noise a non-zero seed adds, in 0–1 image units: enough
#: to move where strokes form, little enough to keep the photo's layout.
SEED_NOISE = 0.1


def _with_seeded_noise(start: torch.Tensor, seed: int) -> torch.Tensor:
    """The start plus noise drawn from ``seed``: a different variant per seed, the same one on every device.

    Without a seed the start is the recoloured photo and the result is fully
    determined by the inputs; the noise is drawn on the CPU so that one seed
    means one picture whatever the device.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(start.shape, generator=generator) * SEED_NOISE
    return (start + noise.to(start.device, start.dtype)).clamp(0, 1)


Evaluation = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]  # image, loss, parts


def _evaluate(loss_fn: Loss, params: Sequence[torch.Tensor], scales: Sequence[float]) -> Evaluation:
    """The image the parameters (pyramid levels over ``scales``) stand for, its objective,
    and the gradient left in ``params``."""
    for q in params:
        q.grad = None
    x = pyramid_join([q * k for q, k in zip(params, scales, strict=True)])
    loss, parts = loss_fn(x)
    loss.backward()
    return x.detach(), loss.detach(), parts


class _GraphedEvaluation:
    """``_evaluate`` recorded once as a CUDA graph and replayed at every step.

    On a GPU a step at bot sizes costs what launching ~300 small kernels from
    Python costs, several times the GPU's own work (benchmarks/RESULTS.md); a
    replay launches them all at once.  The optimiser changes the parameters in
    place, so the graph reads them where they are, and each replay overwrites the
    same gradient, image and loss tensors.
    """

    def __init__(self, loss_fn: Loss, params: Sequence[torch.Tensor], scales: Sequence[float]) -> None:
        # No warm-up run on a side stream, as torch's docs suggest: the optimiser's
        # first evaluation, eager, has already initialised what is lazy at these
        # shapes, and a side stream kept 0.7-2 GB more GPU memory cached for nothing
        # (benchmarks/RESULTS.md).  A capture that fails anyway falls back to eager steps.
        for q in params:
            q.grad = None  # the recorded backward then allocates the gradients in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = _evaluate(loss_fn, params, scales)

    def __call__(self) -> Evaluation:
        self.graph.replay()
        return self.outputs


def _evaluator(
    loss_fn: Loss, params: list[torch.Tensor], scales: Sequence[float], graphed: bool
) -> Callable[[], Evaluation]:
    """A replayed CUDA graph where asked and possible, else plain eager evaluation."""
    if graphed:
        try:
            return _GraphedEvaluation(loss_fn, params, scales)
        except RuntimeError as exc:  # an op this torch cannot record: slower, still right
            log.warning("CUDA graph capture failed, evaluating step by step instead: %s", exc)
    return lambda: _evaluate(loss_fn, params, scales)


def _optimize(
    loss_fn: Loss,
    start: torch.Tensor,
    steps: int,
    optimizer: Optimizer,
    on_step: Callable[[torch.Tensor, dict[str, float], torch.Tensor], None],
    cancel: CancelCheck | None,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """Run ``steps`` evaluations of ``loss_fn`` from ``start``; returns the image.

    With ``cuda_graphs`` every evaluation after the first replays a CUDA graph.
    """

    def report(x: torch.Tensor, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        values = [float(v) for v in (loss, *parts.values())]  # one wait for the device, then cheap reads
        if not math.isfinite(values[0]):  # L-BFGS would fail later, and cryptically
            raise StylizeError("the painting diverged (the loss is not finite)")
        on_step(loss, dict(zip(parts, values[1:], strict=True)), x)
        return loss

    if _is_cancelled(cancel):
        raise Cancelled()
    # One evaluation of the damped levels sizes the parametrisation.  L-BFGS's
    # first step is a unit step along the parameters' gradient; scaling the
    # parameters by alpha = loss·|g|₁/|g|² turns it into a fraction of Polyak's
    # step (loss/|g|²) instead of torch's tiny default, which wastes ~3 steps.
    # Adam normalises each parameter's steps itself, so it gets neither scaling.
    # L-BFGS flattens parameters and gradients with view(), so they must be in the
    # standard layout; the model turns them channels-last where it runs so.
    bands = pyramid_split(start, PYRAMID_LEVELS)
    gain = LEVEL_GAIN if optimizer is Optimizer.LBFGS else 1.0
    damping = [gain**k for k in range(len(bands))]
    levels = [
        (band / d).clone(memory_format=torch.contiguous_format).requires_grad_(True)
        for band, d in zip(bands, damping, strict=True)
    ]
    loss0 = report(*_evaluate(loss_fn, levels, damping))
    g1 = sum(float(p.grad.abs().sum()) for p in levels)
    g2 = sum(float(p.grad.square().sum()) for p in levels)
    alpha = FIRST_STEP * float(loss0) * g1 / g2 if g2 > 0 else 1.0
    if optimizer is Optimizer.ADAM:
        alpha = 1.0
    scales = [alpha * d for d in damping]
    params = []
    for p in levels:
        q = (p.detach() / alpha).requires_grad_(True)
        q.grad = p.grad * alpha
        params.append(q)
    first = [loss0]  # the evaluation above (eager: nothing overwrites it) is the optimizer's first one
    evaluate: list[Callable[[], Evaluation]] = []  # made at the second evaluation, after the first gradient is read

    def closure() -> torch.Tensor:
        if first:
            return first.pop()
        if _is_cancelled(cancel):
            raise Cancelled()
        if not evaluate:
            evaluate.append(_evaluator(loss_fn, params, scales, cuda_graphs))
        return report(*evaluate[0]()).clone()  # L-BFGS keeps the first loss; a replay overwrites it

    if steps > 1:
        if optimizer is Optimizer.LBFGS:
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=steps,
                max_eval=steps,
                history_size=LBFGS_HISTORY,
                tolerance_grad=0.0,
                tolerance_change=0.0,
                line_search_fn="strong_wolfe",
            )
            opt.step(closure)
        else:
            opt = torch.optim.Adam(params, lr=0.02)
            for _ in range(steps):  # the first call reuses the evaluation above
                opt.step(closure)
    with torch.no_grad():
        return pyramid_join([q * k for q, k in zip(params, scales, strict=True)]).clamp(0, 1)


def stylize(
    content: ImageInput,
    styles: Sequence[ImageInput] | ImageInput,
    settings: StyleSettings | None = None,
    *,
    device: str | None = None,
    progress: Callable[[StylizeProgress], None] | None = None,
    cancel: CancelCheck | None = None,
    objective: Objective | None = None,
    steps: Sequence[int] | None = None,
) -> Image.Image:
    """Paint ``content`` in the style of ``styles``; returns an RGB image.

    ``objective`` and ``steps`` override what ``settings`` implies (the
    benchmark reproduces another implementation's objective; tests run a few
    steps).  ``cancel`` is checked before every step and raises ``Cancelled``.
    """
    settings = settings or StyleSettings()
    if isinstance(styles, Image.Image | bytes | str | Path):
        styles = [styles]
    if not styles:
        raise StylizeError("at least one style image is needed")
    blend = settings.blend_weights(len(styles))
    dev = devices.pick_device(device)
    content_img = _as_image(content, "photo")
    style_imgs = [_crop_style(_as_image(s, "style image")) for s in styles]

    w, h = content_img.size
    long_side = settings.size or devices.default_size(dev)
    out_size = paint_size((w, h), long_side, devices.max_size(dev, min(w, h) / max(w, h)))
    _check_memory(dev, out_size, len(style_imgs), settings.style_scale)
    objective = objective or default_objective(settings.strength, settings.tv_weight)
    schedule = plan(out_size, settings.quality, steps)

    model = cached_features(dev, dtype=devices.compute_dtype(dev))

    def tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        return to_tensor(resize(img, size)).to(dev)

    started = time.monotonic()
    total_cost = sum(s.steps * s.pixels for s in schedule)
    total_steps = sum(s.steps for s in schedule)
    done = {"steps": 0, "cost": 0.0}
    x: torch.Tensor | None = None
    photo = None
    try:
        for index, scale in enumerate(schedule, start=1):
            photo = tensor(content_img, (scale.width, scale.height))
            style_area = int(scale.pixels * settings.style_scale**2)
            style_ts = [tensor(s, style_size(s.size, style_area)) for s in style_imgs]
            target = photo
            if settings.preserve_colors:
                # Gatys et al. 2017: transfer on luminance only, with the painting's
                # luminance matched to the photo's; the photo's chroma goes back at the end.
                target = luminance_only(photo)
                style_ts = [luminance_only(s, like=photo) for s in style_ts]
            with torch.no_grad():
                loss_fn = Loss(model, objective, target, style_ts, blend)
            start = _initial_image(target, style_ts[0], x)
            if x is None and settings.seed:
                start = _with_seeded_noise(start, settings.seed)

            def on_step(
                loss: torch.Tensor, parts: dict[str, float], image: torch.Tensor,
                index: int = index, scale: Scale = scale,
            ) -> None:  # fmt: skip
                done["steps"] += 1
                done["cost"] += scale.pixels
                if progress is None:
                    return
                elapsed = time.monotonic() - started
                fraction = min(1.0, done["cost"] / total_cost)
                eta = elapsed / fraction * (1 - fraction) if done["steps"] >= 3 else None
                progress(
                    StylizeProgress(
                        index,
                        len(schedule),
                        scale.width,
                        scale.height,
                        done["steps"],
                        total_steps,
                        float(loss.detach()),
                        parts["content"],
                        parts["style"],
                        parts["tv"],
                        elapsed,
                        eta,
                        fraction,
                        image,
                    )
                )

            x = _optimize(
                loss_fn,
                start,
                scale.steps,
                settings.optimizer,
                on_step,
                cancel,
                cuda_graphs=devices.use_cuda_graphs(dev),
            )
            del loss_fn
    except torch.cuda.OutOfMemoryError:
        raise StylizeError("the image was too large for the GPU's memory; try a smaller size") from None

    assert x is not None and photo is not None
    if settings.preserve_colors:
        x = with_chroma_of(x, photo)
    return to_pil(x)
