"""The engine against pastiche on pastiche's own objective, side by side in one run.

pastiche runs its default (content relu4_2 with weight 0.01, style relu1_1..relu5_1
with 10/C², no TV, L-BFGS from the photo) for 100 steps; its final objective is
the target.  The engine then optimises *the same objective* on the same pixels
(inputs resized exactly as pastiche resizes them) with its own schedule, and we
record the wall time until its full-resolution objective reaches the target.
As a cross-check, the engine's loss code scores pastiche's final image: it
must give pastiche's own value.

    python benchmarks/bench_core.py --pixels 65536 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memory import PeakRSS  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

from nst_core import images  # noqa: E402
from nst_core.device import compute_dtype, pick_device  # noqa: E402
from nst_core.schedule import plan  # noqa: E402
from nst_core.settings import Quality, StyleSettings  # noqa: E402
from nst_core.transfer import Objective, StylizeProgress, stylize, to_tensor  # noqa: E402
from nst_core.vgg import STYLE_LAYERS, cached_features  # noqa: E402

SHARED = Path(os.environ.get("NST_SHARED_DIR", ROOT.parent / "shared"))
CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}


class _Reached(Exception):
    pass


def pastiche_objective() -> Objective:
    return Objective(
        content_layers={"relu4_2": 0.01},
        style_layers={layer: 10.0 / CHANNELS[layer] ** 2 for layer in STYLE_LAYERS},
        tv_weight=0.0,
        normalize=False,
    )


def pastiche_pil(path: Path, pixels: int) -> Image.Image:
    """The image exactly as pastiche's load_image sees it (bilinear resize to ``pixels``)."""
    img = Image.open(path)
    w, h = img.size
    size = images.fit_area((w, h), pixels)
    return img.resize(size, Image.BILINEAR).convert("RGB")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_pastiche(content: Path, style: Path, pixels: int, device: str, steps: int) -> dict:
    from pastiche.pastiche import PasticheArtist

    t0 = time.perf_counter()
    artist = PasticheArtist(str(content), [str(style)], device=device, size_pixels=pixels)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        artist.draw()
    _sync(device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        loss = artist._calc_loss().item()
    return {"artist": artist, "seconds": seconds, "setup_seconds": setup, "loss": loss}


def engine_score(artist, content_img: Image.Image, style_img: Image.Image, device: str) -> float:
    """The engine's objective of pastiche's final image: must equal pastiche's own value.

    This is the check that both sides optimise the same function on the same pixels.
    """
    from nst_core.transfer import Loss

    x = artist.pastiche.detach().to(device)
    x = (x + torch.tensor([103.939, 116.779, 123.68], device=device).view(1, 3, 1, 1)).flip(1) / 255
    content = to_tensor(content_img).to(device)
    style = to_tensor(style_img).to(device)
    with torch.no_grad():
        return float(Loss(cached_features(device), pastiche_objective(), content, [style], [1.0])(x)[0])


def vgg_flops(device: str, size: tuple[int, int]) -> float:
    """FLOPs of one forward + input-gradient pass of the objective at ``size`` (w, h)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = cached_features(device)
    x = torch.rand(1, 3, size[1], size[0], device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        feats = model(x, ["relu4_2", *STYLE_LAYERS])
        sum(f.float().square().mean() for f in feats.values()).backward()
    return float(counter.get_total_flops())


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-``repeats`` square matmul rate: the roofline the convolutions are held to.

    On CUDA the engine convolves in bfloat16, so its fraction is taken against a
    bfloat16 matmul (larger, to fill the GPU); float32 is also reported.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


QUALITIES = ("fast", "balanced", "best")


def end_to_end(
    content: Path,
    device: str,
    qualities: tuple[str, ...] = ("balanced",),
    repeats: int = 3,
    cudnn_benchmark: tuple[bool, ...] = (False,),
    cuda_graphs: tuple[bool, ...] = (True,),
) -> dict:
    """Default 512 px stylizations, model warm, from file bytes to JPEG bytes (the GPU target).

    A bot job pays for a new photo size, so the median of ``repeats`` warm runs
    is reported next to the first run at a shape the process has not seen (the
    photo cropped a little), and a per-scale split of one warm run says where
    the time goes.  On CUDA, ``cudnn_benchmark`` compares cuDNN's autotuner,
    which times every algorithm for each new convolution shape, with its
    heuristics (the engine's choice), and ``cuda_graphs`` replaying recorded steps
    (the engine's choice) with launching every kernel from Python.
    """
    from nst_core.executor import Job, StyleRef
    from nst_core.runner import run_job

    out: dict = {"device": device}
    aspects = iter((1.40, 1.45, 1.35, 1.50, 1.30, 1.55))
    for graphs, tuned, quality in itertools.product(cuda_graphs, cudnn_benchmark, qualities):
        torch.backends.cudnn.benchmark = tuned
        os.environ["NST_CUDA_GRAPHS"] = "1" if graphs else "0"
        key = f"e2e_{quality}_512" + ("_cudnn_benchmark" if tuned else "") + ("" if graphs else "_no_graphs")
        job = Job(
            "bench", content.read_bytes(), (StyleRef(preset="starry-night"),), StyleSettings(size=512, quality=quality)
        )
        run_job(job, device=device, steps=(2, 2, 2))  # warm-up: model, cuDNN autotuning, preset cache
        times = []
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            result = run_job(job, device=device)
            _sync(device)
            times.append(round(time.perf_counter() - t0, 3))
        out[f"{key}_seconds"] = statistics.median(times)
        out[f"{key}_runs"] = times
        if device.startswith("cuda"):
            out[f"{key}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["size"] = [result.width, result.height]
        if quality == "balanced":
            # 512x366, 512x353, ... where the photo gives 512x341: shapes not seen yet, same cost.
            new = dataclasses.replace(job, content=_cropped_png(content, next(aspects)))
            _sync(device)
            t0 = time.perf_counter()
            run_job(new, device=device)
            _sync(device)
            out[f"{key}_new_shape_seconds"] = round(time.perf_counter() - t0, 3)
            out[f"{key}_split"] = _split(content, device)
    os.environ.pop("NST_CUDA_GRAPHS", None)
    return out


def _cropped_png(path: Path, aspect: float) -> bytes:
    photo = Image.open(path).convert("RGB")
    w, h = photo.size
    width = min(w, round(h * aspect))
    buf = io.BytesIO()
    photo.crop(((w - width) // 2, 0, (w + width) // 2, h)).save(buf, "PNG")
    return buf.getvalue()


def _split(content: Path, device: str) -> list[dict]:
    """Seconds and milliseconds per step at each scale of one warm balanced 512 px run."""
    from nst_core.presets import load_preset_image

    marks: list[tuple[int, int, int, float]] = []
    style = load_preset_image("starry-night")
    _sync(device)
    stylize(
        Image.open(content),
        [style],
        StyleSettings(size=512),
        device=device,
        progress=lambda p: marks.append((p.scale, p.width, p.height, p.elapsed)),
    )
    _sync(device)
    rows, last = [], 0.0
    for scale in sorted({m[0] for m in marks}):
        ms = [m for m in marks if m[0] == scale]
        end = ms[-1][3]
        rows.append(
            {
                "scale": scale,
                "size": [ms[0][1], ms[0][2]],
                "steps": len(ms),
                "seconds": round(end - last, 3),
                "ms_per_step": round((end - last) / len(ms) * 1e3, 2),
            }
        )
        last = end
    return rows


def run_engine(
    content_img: Image.Image,
    style_img: Image.Image,
    device: str,
    target: float,
    steps: tuple[int, ...] | None,
    quality: str,
) -> dict:
    """Time the engine until an image it evaluates scores ``target`` on the float32 objective.

    The engine may compute in bfloat16 (``device.compute_dtype``), so its own loss is
    only a hint: a step whose loss comes near the target is scored again with the
    float32 model, off the clock, and only that score counts.
    """
    from nst_core.transfer import Loss

    settings = StyleSettings(size=max(content_img.size), quality=quality, tv_weight=0.0)
    scorer = Loss(
        cached_features(device),
        pastiche_objective(),
        to_tensor(content_img).to(device),
        [to_tensor(style_img).to(device)],
        [1.0],
    )
    trace: list[StylizeProgress] = []
    reached: dict[str, float] = {}
    checking = 0.0
    t0 = time.perf_counter()

    def on_step(p: StylizeProgress) -> None:
        nonlocal checking
        trace.append(dataclasses.replace(p, image=None))
        if p.scale == p.scales and p.loss <= target * 1.1 and "seconds" not in reached:
            t_check = time.perf_counter()
            with torch.no_grad():
                exact = float(scorer(p.image)[0])
            checking += time.perf_counter() - t_check
            if exact <= target:
                reached["seconds"] = time.perf_counter() - t0 - checking
                reached["step"] = p.step
                reached["exact_loss"] = exact
                raise _Reached()

    cached_features(device)  # warm, as in the bot: the model stays loaded between jobs
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        result = None
        with contextlib.suppress(_Reached):
            result = stylize(
                content_img,
                [style_img],
                settings,
                device=device,
                progress=on_step,
                objective=pastiche_objective(),
                steps=steps,
            )
        total = time.perf_counter() - t0 - checking
    return {
        "exact_loss": reached.get("exact_loss"),
        "reached": "seconds" in reached,
        "seconds": reached.get("seconds", total),
        "steps_to_target": reached.get("step"),
        "trace": trace,
        "result": result,
        "peak_rss_mb": rss.peak / 2**20,
    }


def use_cpu_precision(precision: str) -> None:
    """What NST_CPU_BF16 would choose, for this process from now on."""
    from nst_core import device as devices

    os.environ.pop("NST_CPU_BF16", None)
    if precision != "auto":
        os.environ["NST_CPU_BF16"] = "1" if precision == "bfloat16" else "0"
    devices.cpu_prefers_bf16.cache_clear()


def _cpu_model() -> str:
    """The CPU's model name (platform.processor() is often empty on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--content", type=Path, default=SHARED / "content" / "chelsea-cat.png")
    ap.add_argument("--style", type=Path, default=SHARED / "presets" / "starry-night.jpg")
    ap.add_argument(
        "--pixels",
        type=int,
        nargs="*",
        default=[256 * 256, 512 * 512],
        help="output area(s) in pixels, e.g. 65536 for about 256x256 (none: --e2e only)",
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    ap.add_argument("--pastiche-steps", type=int, default=100)
    ap.add_argument(
        "--schedules",
        nargs="+",
        default=["best", "100"],
        help="engine schedules to try: a quality name (its coarse-to-fine schedule) or steps per "
        "scale, coarsest first, e.g. 100 (one scale) or 30,30,100; each stops at the target",
    )
    ap.add_argument(
        "--e2e",
        action="store_true",
        help="also time a default 'balanced' stylization at 512 px end to end (the GPU target)",
    )
    ap.add_argument(
        "--e2e-qualities", nargs="+", default=["balanced"], choices=QUALITIES, help="qualities timed by --e2e"
    )
    ap.add_argument(
        "--cudnn-benchmark",
        nargs="+",
        default=["off"],
        choices=["off", "on"],
        help="CUDA: time --e2e with cuDNN's autotuner off (the engine's choice) and/or on",
    )
    ap.add_argument(
        "--cuda-graphs",
        nargs="+",
        default=["on"],
        choices=["off", "on"],
        help="CUDA: time --e2e with recorded steps replayed (the engine's choice) and/or without",
    )
    ap.add_argument(
        "--cpu-precision",
        nargs="+",
        default=["auto"],
        choices=["auto", "float32", "bfloat16"],
        help="run the engine with each (NST_CPU_BF16), side by side against the same pastiche run",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    cuda = device.startswith("cuda")
    # The engine convolves in bfloat16 on recent GPUs, so its roofline is a bfloat16 matmul there.
    roof = {"n": 8192, "dtype": compute_dtype(device)} if cuda else {}
    matmul = matmul_gflops(device, **roof)  # best of several, before and after each engine run
    runs = []
    also = f" ({roof['dtype']}; float32 {matmul_gflops(device, 8192):.0f})" if cuda else ""
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"matmul {matmul:.0f} GFLOP/s{also}"
    )
    if cuda:
        # The end-to-end target, the point of a GPU run, goes first.
        print(f"GPU {torch.cuda.get_device_name()}", flush=True)
        if args.e2e:
            runs.append(
                end_to_end(
                    args.content,
                    device,
                    tuple(args.e2e_qualities),
                    cudnn_benchmark=tuple(v == "on" for v in args.cudnn_benchmark),
                    cuda_graphs=tuple(v == "on" for v in args.cuda_graphs),
                )
            )
            print(json.dumps(runs[-1]), flush=True)
        torch.backends.cudnn.benchmark = False  # both sides below as the engine runs
    for pixels in args.pixels:
        content_img = pastiche_pil(args.content, pixels)
        style_img = pastiche_pil(args.style, content_img.width * content_img.height)
        if cuda:  # first launches and cuDNN autotuning at these shapes stay off both clocks
            run_pastiche(args.content, args.style, pixels, device, 3)
        p = run_pastiche(args.content, args.style, pixels, device, args.pastiche_steps)
        agreement = engine_score(p["artist"], content_img, style_img, device)
        for precision, name in itertools.product(args.cpu_precision, args.schedules):
            use_cpu_precision(precision)
            steps = None if name in QUALITIES else tuple(int(n) for n in name.split(","))
            if cuda:
                n_scales = len(plan(content_img.size, Quality(name) if steps is None else Quality.BEST, steps))
                run_engine(content_img, style_img, device, 0.0, (2,) * n_scales, "best")
                torch.cuda.reset_peak_memory_stats()
            e = run_engine(content_img, style_img, device, p["loss"], steps, name if steps is None else "best")
            matmul = max(matmul, matmul_gflops(device, **roof))
            flops = 0.0
            per_size: dict[tuple[int, int], float] = {}
            for step in e["trace"]:
                key = (step.width, step.height)
                if key not in per_size:
                    per_size[key] = vgg_flops(device, key)
                flops += per_size[key]
            row = {
                "content": args.content.name,
                "style": args.style.name,
                "pixels": pixels,
                "size": list(content_img.size),
                "device": device,
                "schedule": name,
                "cpu_precision": precision,
                "pastiche_steps": args.pastiche_steps,
                "pastiche_seconds": round(p["seconds"], 2),
                "pastiche_setup_seconds": round(p["setup_seconds"], 2),
                "pastiche_loss": p["loss"],
                "pastiche_final_loss_by_engine": agreement,
                "engine_reached_target": e["reached"],
                "engine_seconds": round(e["seconds"], 2),
                "engine_steps": len(e["trace"]),
                "engine_steps_by_scale": [
                    sum(1 for t in e["trace"] if t.scale == k) for k in range(1, e["trace"][-1].scales + 1)
                ],
                "engine_full_size_equivalent_steps": round(
                    sum(t.width * t.height for t in e["trace"]) / (content_img.width * content_img.height), 1
                ),
                "engine_loss": e["trace"][-1].loss,
                "engine_loss_float32": e["exact_loss"],
                "engine_precision": str(compute_dtype(device)).removeprefix("torch."),
                # Only a run that reached pastiche's loss has a ratio; otherwise it is not comparable.
                "ratio": round(p["seconds"] / e["seconds"], 2) if e["reached"] else None,
                "engine_gflops": round(flops / e["seconds"] / 1e9, 1),
                "matmul_gflops": round(matmul, 1),
                "gflops_fraction": round(flops / e["seconds"] / 1e9 / matmul, 3),
                "peak_rss_mb": round(e["peak_rss_mb"], 1),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            }
            runs.append(row)
            print(json.dumps(row))
            print(
                f"  {content_img.width}x{content_img.height} [{name}, {row['engine_precision']}]: "
                f"pastiche {row['pastiche_seconds']} s "
                f"(loss {row['pastiche_loss']:.4g}) vs engine {row['engine_seconds']} s "
                f"({'reached' if e['reached'] else 'NOT reached'} after {row['engine_steps_by_scale']} steps) "
                f"-> {row['ratio']}x; {row['engine_gflops']} GFLOP/s = {row['gflops_fraction']:.0%} of matmul; "
                f"peak RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    if args.e2e and not cuda:
        use_cpu_precision("auto")  # what a user gets
        runs.append(end_to_end(args.content, device, tuple(args.e2e_qualities), repeats=1))
        print(json.dumps(runs[-1]), flush=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": device,
        },
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
