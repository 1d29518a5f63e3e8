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
import itertools
import json
import os
import platform
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
from nst_core.settings import StyleSettings  # noqa: E402
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


def run_pastiche(content: Path, style: Path, pixels: int, device: str, steps: int) -> dict:
    from pastiche.pastiche import PasticheArtist

    t0 = time.perf_counter()
    artist = PasticheArtist(str(content), [str(style)], device=device, size_pixels=pixels)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        artist.draw()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
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


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


QUALITIES = ("fast", "balanced", "best")


def end_to_end(content: Path, device: str) -> dict:
    """A default 'balanced' 512 px stylization, model warm, from file bytes to JPEG bytes."""
    from nst_core.executor import Job, StyleRef
    from nst_core.runner import run_job

    job = Job("bench", content.read_bytes(), (StyleRef(preset="starry-night"),), StyleSettings(size=512))
    run_job(job, device=device, steps=(2, 2, 2))  # warm-up: model, cuDNN autotuning, preset cache
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = run_job(job, device=device)
    return {"e2e_balanced_512_seconds": round(time.perf_counter() - t0, 2), "device": device,
            "size": [result.width, result.height]}


def run_engine(content_img: Image.Image, style_img: Image.Image, device: str, target: float,
               steps: tuple[int, ...] | None, quality: str) -> dict:
    """Time the engine until an image it evaluates scores ``target`` on the float32 objective.

    The engine may compute in bfloat16 (``device.compute_dtype``), so its own loss is
    only a hint: a step whose loss comes near the target is scored again with the
    float32 model, off the clock, and only that score counts.
    """
    from nst_core.transfer import Loss

    settings = StyleSettings(size=max(content_img.size), quality=quality, tv_weight=0.0)
    scorer = Loss(cached_features(device), pastiche_objective(), to_tensor(content_img).to(device),
                  [to_tensor(style_img).to(device)], [1.0])
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
            result = stylize(content_img, [style_img], settings, device=device, progress=on_step,
                             objective=pastiche_objective(), steps=steps)
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
    devices.cpu_has_native_bf16.cache_clear()


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
    ap.add_argument("--pixels", type=int, nargs="+", default=[256 * 256, 512 * 512],
                    help="output area(s) in pixels, e.g. 65536 for about 256x256")
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    ap.add_argument("--pastiche-steps", type=int, default=100)
    ap.add_argument("--schedules", nargs="+", default=["best", "100"],
                    help="engine schedules to try: a quality name (its coarse-to-fine schedule) or steps per "
                         "scale, coarsest first, e.g. 100 (one scale) or 30,30,100; each stops at the target")
    ap.add_argument("--e2e", action="store_true",
                    help="also time a default 'balanced' stylization at 512 px end to end (the GPU target)")
    ap.add_argument("--cpu-precision", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"],
                    help="run the engine with each (NST_CPU_BF16), side by side against the same pastiche run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    matmul = matmul_gflops(device)  # best of several, before and after each engine run
    runs = []
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"matmul {matmul:.0f} GFLOP/s")
    for pixels in args.pixels:
        content_img = pastiche_pil(args.content, pixels)
        style_img = pastiche_pil(args.style, content_img.width * content_img.height)
        p = run_pastiche(args.content, args.style, pixels, device, args.pastiche_steps)
        agreement = engine_score(p["artist"], content_img, style_img, device)
        for precision, name in itertools.product(args.cpu_precision, args.schedules):
            use_cpu_precision(precision)
            steps = None if name in QUALITIES else tuple(int(n) for n in name.split(","))
            e = run_engine(content_img, style_img, device, p["loss"], steps, name if steps is None else "best")
            matmul = max(matmul, matmul_gflops(device))
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
                "engine_steps_by_scale": [sum(1 for t in e["trace"] if t.scale == k)
                                          for k in range(1, e["trace"][-1].scales + 1)],
                "engine_full_size_equivalent_steps": round(
                    sum(t.width * t.height for t in e["trace"]) / (content_img.width * content_img.height), 1),
                "engine_loss": e["trace"][-1].loss,
                "engine_loss_float32": e["exact_loss"],
                "engine_precision": ("float16 autocast" if device.startswith("cuda")
                                     else str(compute_dtype(device)).removeprefix("torch.")),
                # Only a run that reached pastiche's loss has a ratio; otherwise it is not comparable.
                "ratio": round(p["seconds"] / e["seconds"], 2) if e["reached"] else None,
                "engine_gflops": round(flops / e["seconds"] / 1e9, 1),
                "matmul_gflops": round(matmul, 1),
                "gflops_fraction": round(flops / e["seconds"] / 1e9 / matmul, 3),
                "peak_rss_mb": round(e["peak_rss_mb"], 1),
            }
            runs.append(row)
            print(json.dumps(row))
            print(f"  {content_img.width}x{content_img.height} [{name}, {row['engine_precision']}]: "
                  f"pastiche {row['pastiche_seconds']} s "
                  f"(loss {row['pastiche_loss']:.4g}) vs engine {row['engine_seconds']} s "
                  f"({'reached' if e['reached'] else 'NOT reached'} after {row['engine_steps_by_scale']} steps) "
                  f"-> {row['ratio']}x; {row['engine_gflops']} GFLOP/s = {row['gflops_fraction']:.0%} of matmul; "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    if args.e2e:
        use_cpu_precision("auto")  # what a user gets
        runs.append(end_to_end(args.content, device))
        print(json.dumps(runs[-1]), flush=True)
    report = {
        "machine": {"platform": platform.platform(), "processor": _cpu_model(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device},
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
