"""Which device runs the engine, and how large an image it can afford.

Sizes are refused up front with a clear message rather than discovered by an
out-of-memory crash half-way through a job.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nst_core.settings import MAX_SIZE, MIN_SIZE

#: Bytes of working memory per output pixel for VGG19 to relu5_1 with gradients, L-BFGS
#: history and the coarse-to-fine copies (float32).  The benchmark's peak RSS at 628x418
#: is about 6 KB per pixel above the process's baseline; this keeps 50 % headroom.
BYTES_PER_PIXEL = 9_000


def pick_device(requested: str | None = None) -> str:
    """``requested`` if usable, else the best available: cuda > mps > cpu."""
    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} is not available: no CUDA GPU found")
        if requested == "mps" and not (torch.backends.mps.is_available()):
            raise ValueError("device 'mps' is not available on this machine")
        if requested.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unknown device {requested!r}: use cpu, cuda, cuda:N, mps or auto")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


#: bfloat16 must beat float32 by this much in the probe to be chosen: a clear margin,
#: so a noisy probe on a busy host does not flip a CPU where the two are close.
BF16_MIN_SPEEDUP = 1.2


@functools.lru_cache(maxsize=1)
def cpu_prefers_bf16() -> bool:
    """Whether the VGG convolutions run faster in bfloat16 than in float32 on this CPU.

    Only CPUs that advertise bfloat16 instructions (AMX or AVX512-BF16) are candidates;
    elsewhere bfloat16 is emulated, many times slower.  The flags alone are not enough:
    an AMX Xeon ran VGG about 2x faster in bfloat16, but the same Xeon model under a
    hypervisor that hid AMX (AVX512-BF16 left) ran it 1.6x *slower*
    (benchmarks/RESULTS.md).  So a candidate is settled by timing one convolution
    both ways, about 0.1 s once per process.  ``NST_CPU_BF16=0`` (or ``1``) skips all
    of this.
    """
    forced = os.environ.get("NST_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return prefer_bf16(_cpu_flags(), _bf16_speedup)


def prefer_bf16(flags: str, speedup: Callable[[], float]) -> bool:
    """The decision, given the CPU's flags and a probe that is run only when they qualify."""
    if re.search(r"\b(amx_bf16|avx512_bf16)\b", flags) is None:
        return False
    return speedup() >= BF16_MIN_SPEEDUP


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so float32, the safe choice
        return ""


def _bf16_speedup() -> float:
    """float32 time over bfloat16 time for a VGG-sized 3x3 convolution, best of a few tries."""
    x = torch.rand(1, 128, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.rand(128, 128, 3, 3).contiguous(memory_format=torch.channels_last)
    best = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16) * 3:  # interleaved, so both see the same load
            xd, wd = x.to(dtype), w.to(dtype)
            torch.nn.functional.conv2d(xd, wd, padding=1)  # the first call picks and packs kernels
            started = time.perf_counter()
            for _ in range(3):
                torch.nn.functional.conv2d(xd, wd, padding=1)
            elapsed = time.perf_counter() - started
            best[dtype] = min(best.get(dtype, elapsed), elapsed)
    return best[torch.float32] / best[torch.bfloat16]


def compute_dtype(device: str) -> torch.dtype:
    """The dtype of the VGG weights and activations on ``device``.

    Gram matrices, losses and the image itself stay float32 everywhere.
    """
    if device == "cpu":
        return torch.bfloat16 if cpu_prefers_bf16() else torch.float32
    if device.startswith("cuda"):
        return cuda_dtype(torch.cuda.get_device_capability(torch.device(device)))
    return torch.float32


def cuda_dtype(capability: tuple[int, int]) -> torch.dtype:
    """bfloat16 on GPUs with bfloat16 tensor cores (Ampere, compute capability 8.0, and later).

    Not float16: VGG's activations on 0-255 Caffe inputs exceed its range once
    L-BFGS's line search tries a bold step, and the run dies on an infinite loss
    (seen on an H200, benchmarks/RESULTS.md).  bfloat16 has float32's range at
    float16's speed; older GPUs keep float32.
    """
    return torch.bfloat16 if capability >= (8, 0) else torch.float32


def use_cuda_graphs(device: str) -> bool:
    """Whether the optimisation steps on ``device`` replay a recorded CUDA graph.

    On a GPU a step at bot sizes is bound by Python launching some 300 small
    kernels, not by the GPU (benchmarks/RESULTS.md); a graph launches them all at
    once.  ``NST_CUDA_GRAPHS=0`` turns it off (read per job, so a test or a
    benchmark can compare both in one process).
    """
    return device.startswith("cuda") and os.environ.get("NST_CUDA_GRAPHS", "1").strip() != "0"


def describe_device(device: str, threads: int | None = None) -> str:
    """Where jobs run, and whether in bfloat16: derived afresh each time, so it follows
    ``compute_dtype`` (itself cached) and never outlives an ``NST_CPU_BF16`` change.

    ``threads``: the CPU threads the painter is given, when it sets them itself; torch's
    count here is only right after the painter's thread has applied them."""
    precision = ", bfloat16 convolutions" if compute_dtype(device) == torch.bfloat16 else ""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))}{precision})"
    if device == "cpu":
        n = threads or torch.get_num_threads()
        return f"cpu ({n} thread{'' if n == 1 else 's'}{precision})"
    return device


def available_memory(device: str) -> int:
    """Bytes the engine may use on ``device``."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.9)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages * 0.8)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def max_size(device: str, aspect: float = 1.0) -> int:
    """Largest long side (px) that fits in memory for an image of aspect ``short/long``."""
    pixels = available_memory(device) / BYTES_PER_PIXEL
    side = int((pixels / max(aspect, 1e-3)) ** 0.5)
    return max(MIN_SIZE, min(MAX_SIZE, side))


def default_size(device: str) -> int:
    """A long side that finishes in about a second on a GPU and in 0.5-2 minutes on a 2-core CPU.

    The CPU end depends on hardware bfloat16 (benchmarks/RESULTS.md has the measured times).
    """
    return min(max_size(device), 768 if device.startswith("cuda") else 512)
