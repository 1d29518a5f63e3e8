"""The in-process executor in a fresh Python process, where torch's libraries are not loaded yet.

The bot's event loop answers every user; whatever runs on it blocks them all.  In a
fresh process the first job used to import the engine (torch, torchvision, the VGG
module) on the loop itself, which froze the bot for about two seconds before anyone's
first picture.  This test runs the real ``LocalExecutor`` in a subprocess so that the
imports really happen, and watches which thread asks for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import asyncio, builtins, io, json, logging, threading

    importers = {}  # module -> the threads that asked for it, even when it was loaded already
    HEAVY = {"torchvision", "nst_core.transfer", "nst_core.runner"}
    real_import = builtins.__import__

    def watch(name, globals=None, locals=None, fromlist=(), level=0):
        wanted = {name} | {f"{name}.{f}" for f in fromlist or ()}
        for module in wanted & HEAVY:
            importers.setdefault(module, set()).add(threading.current_thread().name)
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = watch
    logs = []

    class Keep(logging.Handler):
        def emit(self, record):
            logs.append(record.getMessage())

    logging.getLogger("nst_core").addHandler(Keep())
    logging.getLogger("nst_core").setLevel(logging.INFO)

    from PIL import Image
    from nst_core.executor import Job, JobDone, LocalExecutor, StyleRef
    from nst_core.settings import StyleSettings

    def png(colour):
        buf = io.BytesIO()
        Image.new("RGB", (80, 64), colour).save(buf, "PNG")
        return buf.getvalue()

    async def main():
        events = []
        done = asyncio.Event()

        async def on_event(event):
            events.append(type(event).__name__)
            if type(event).__name__ in ("JobDone", "JobFailed", "JobCancelled"):
                done.set()

        executor = LocalExecutor("cpu", steps=(2,))
        await executor.start(on_event)
        for _ in range(600):  # the model warms up before any job is asked for
            if any(line.startswith("VGG19 warm on cpu") for line in logs):
                break
            await asyncio.sleep(0.1)
        warm_before_job = any(line.startswith("VGG19 warm on cpu") for line in logs)
        job = Job("j1", png((200, 120, 40)), (StyleRef(image=png((20, 60, 200))),), StyleSettings(size=64))
        await executor.submit(job)
        await asyncio.wait_for(done.wait(), 300)
        await executor.stop()
        print(json.dumps({
            "importers": {module: sorted(threads) for module, threads in importers.items()},
            "warm_before_job": warm_before_job,
            "events": events,
            "loop_thread": threading.current_thread().name,
        }))

    asyncio.run(main())
    """
)


def test_the_engine_loads_on_the_worker_thread_before_the_first_job() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NST_CPU_BF16": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["events"][-1] == "JobDone", out.stderr
    assert report["warm_before_job"], "no 'VGG19 warm on cpu' log line before the first job"
    # The engine was imported, and only ever asked for on the worker thread, never on the
    # thread that runs the event loop (not even as a lookup that would wait for another import).
    assert {"nst_core.runner", "nst_core.transfer"} <= set(report["importers"]), report
    threads = {name for names in report["importers"].values() for name in names}
    assert threads and all(name.startswith("nst-worker") for name in threads), report
    assert report["loop_thread"] not in threads
