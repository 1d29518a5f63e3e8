"""How close the queue's time estimates come to the real times.

The in-process executor runs a mix of real jobs one after another, exactly as the
bot submits them (photo bytes, a preset, the user's size and quality), and each
job's estimate at submission (``Executor.estimate``, the figure of the user's
first status message) is set beside how long it really took from submission to
its result.  The first job's estimate rests on the warm-up's step timing alone;
later ones are corrected by the jobs finished before them.  For comparison the
old rule (the median of recent jobs, 30 s before the first) is scored on the
same jobs.

    python benchmarks/bench_eta.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("NST_SHARED_DIR", ROOT.parent / "shared"))
os.environ.setdefault("NST_PRESET_SOURCE_DIR", str(SHARED / "presets"))

from nst_core.executor import Job, JobDone, JobEvent, JobFailed, LocalExecutor, StyleRef  # noqa: E402
from nst_core.settings import Quality, StyleSettings  # noqa: E402

#: (photo, preset, long side, quality): the sizes and qualities the bot offers, mixed.
MIX = [
    ("chelsea-cat.png", "starry-night", 512, "balanced"),
    ("astronaut.png", "great-wave", 256, "fast"),
    ("coffee.png", "the-scream", 512, "fast"),
    ("rocket.jpg", "woman-with-a-hat", 256, "balanced"),
    ("chelsea-cat.png", "the-kiss", 768, "fast"),
    ("astronaut.png", "starry-night", 256, "best"),
]


async def run(args: argparse.Namespace) -> dict:
    done: dict[str, asyncio.Future] = {}

    async def on_event(event: JobEvent) -> None:
        if isinstance(event, JobDone | JobFailed) and event.job_id in done:
            done[event.job_id].set_result(event)

    executor = LocalExecutor(args.device)
    started = time.monotonic()
    await executor.start(on_event)
    # The worker thread is single: a no-op queued behind the warm-up returns after it.
    await asyncio.to_thread(executor._pool.submit(lambda: None).result)
    await asyncio.sleep(0)  # the measured step cost reaches the loop
    print(f"device: {executor.device}; warm-up and step timing {time.monotonic() - started:.1f} s", flush=True)
    rows, finished = [], []
    for i, (photo, preset, size, quality) in enumerate(MIX[: args.jobs]):
        data = (SHARED / "content" / photo).read_bytes()
        job = Job(f"j{i}", data, (StyleRef(preset=preset),), StyleSettings(size=size, quality=Quality(quality)))
        estimate = await executor.estimate(job)
        old = statistics.median(finished) if finished else 30.0
        done[job.id] = asyncio.get_running_loop().create_future()
        t0 = time.monotonic()
        await executor.submit(job)
        event = await done[job.id]
        actual = time.monotonic() - t0
        assert isinstance(event, JobDone), event
        finished.append(actual)
        row = {
            "job": f"{photo} {preset} {size}px {quality}",
            "actual_s": round(actual, 2),
            "estimate_s": round(estimate, 2),
            "old_rule_s": round(old, 2),
        }
        rows.append(row)
        print(
            f"{row['job']:<44} actual {actual:6.1f} s  estimate {estimate:6.1f} s ({estimate / actual:4.2f}×)"
            f"  old rule {old:6.1f} s ({old / actual:4.2f}×)",
            flush=True,
        )
    await executor.stop()

    def error(key: str) -> float:  # the median of |log ratio|, as a factor: 1.10 = typically 10 % off
        return math.exp(statistics.median(abs(math.log(r[key] / r["actual_s"])) for r in rows))

    summary = {
        "estimate_typical_error": round(error("estimate_s"), 3),
        "old_rule_typical_error": round(error("old_rule_s"), 3),
    }
    print(
        f"typically off by a factor of {summary['estimate_typical_error']:.2f} "
        f"(old rule: {summary['old_rule_typical_error']:.2f})"
    )
    return {"machine": platform.processor() or platform.machine(), "device": executor.device, "jobs": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best there is)")
    parser.add_argument("--jobs", type=int, default=len(MIX), help=f"how many of the {len(MIX)} jobs to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
