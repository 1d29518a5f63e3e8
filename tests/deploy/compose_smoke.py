"""Drive the Compose stack (Redis, the bot, CPU workers) end to end against the fake Bot API.

Not part of the test suite: it needs a container engine and the built image, which
CI does not have.  Run it from the repository root once the image is built::

    docker compose build bot          # or: podman build -t nst-bot:cpu .
    python -m tests.deploy.compose_smoke --compose "docker compose" --presets ../shared/presets

It starts the fake Telegram server on the host, points the bot container at it
(``TELEGRAM_BASE_URL``), brings up ``redis``, ``bot`` and ``worker-cpu`` from
``docker-compose.yml`` unchanged (an override file only adds test settings: a
small picture size, few steps, and a preset folder to fetch from, because the
painting's pinned URLs may be out of reach), and then acts as users would:

1. one user sends a photo with a preset name and gets the painting back;
2. the workers are scaled to two, and two users' jobs are painted by two workers;
3. Redis is restarted while a job waits: the job survives (append-only file on
   its volume) and is delivered;
4. ``down`` stops everything within the grace periods.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from tests.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[2]


def photo_bytes(seed: int) -> bytes:
    img = Image.new("RGB", (160, 120), (40 + 30 * seed, 90, 160))
    for x in range(0, 160, 8):
        for y in range(0, 120, 8):
            if (x // 8 + y // 8 + seed) % 3 == 0:
                img.putpixel((x, y), (250, 220, 40))
    out = io.BytesIO()
    img.save(out, "JPEG")
    return out.getvalue()


class Stack:
    def __init__(self, compose: str, directory: Path) -> None:
        # A project name of its own: its volumes are wiped before and after, and an operator's
        # real "nst" project on the same machine is never touched.
        self.compose = [
            *shlex.split(compose),
            "-p",
            "nst-smoke",
            "-f",
            "docker-compose.yml",
            "-f",
            "smoke.override.yml",
            "--profile",
            "cpu",
        ]
        self.directory = directory

    async def run(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self.compose, *args, cwd=self.directory,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if not quiet:
            print(f"$ compose {' '.join(args)}  ({time.monotonic() - started:.1f} s, exit {proc.returncode})")
        if check and proc.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed:\n{text[-3000:]}")
        return text


async def wait_photos(tg: FakeTelegram, chat_id: int, count: int, timeout: float) -> float:
    started = time.monotonic()
    await tg.wait_for("sendPhoto", lambda r: str(r.params.get("chat_id")) == str(chat_id), timeout=timeout, count=count)
    return time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", default="docker compose", help='e.g. "docker compose" or "podman-compose"')
    parser.add_argument("--presets", type=Path, required=True, help="folder with the preset paintings")
    parser.add_argument(
        "--host-alias",
        default="host.containers.internal",
        help="how a container reaches this machine (docker: host.docker.internal)",
    )
    parser.add_argument("--port", type=int, default=18081)
    args = parser.parse_args()

    tg = FakeTelegram(host="0.0.0.0", port=args.port)
    await tg.start()
    work = Path(tempfile.mkdtemp(prefix="nst-compose-"))
    shutil.copy(ROOT / "docker-compose.yml", work)
    api = f"http://{args.host_alias}:{args.port}"
    (work / ".env").write_text(
        f"TELEGRAM_BOT_TOKEN={tg.token}\nTELEGRAM_BASE_URL={api}/bot\nTELEGRAM_BASE_FILE_URL={api}/file/bot\n"
        "NST_SIZE_SMALL=96\nNST_SIZE_MEDIUM=96\nNST_SIZE_LARGE=128\n"
    )
    (work / "smoke.override.yml").write_text(f"""
services:
  worker-cpu:
    environment:
      NST_STEPS: "6"
      NST_PRESET_SOURCE_DIR: /presets
    volumes:
      - {args.presets.resolve()}:/presets:ro
""")
    stack = Stack(args.compose, work)
    failures: list[str] = []
    try:
        await stack.run("down", "-v", quiet=True, check=False)  # leftovers of an earlier run
        t0 = time.monotonic()
        await stack.run("up", "-d", "redis", "bot", "worker-cpu")
        print(f"stack up in {time.monotonic() - t0:.1f} s")

        alice, bob = tg.user(1, "Alice"), tg.user(2, "Bob")
        alice_chat, bob_chat = tg.private_chat(alice), tg.private_chat(bob)
        sent = tg.send_photo(alice_chat, alice, photo_bytes(1), caption="starry-night")
        took = await wait_photos(tg, alice_chat["id"], 1, 600)
        (result,) = [r for r in tg.calls("sendPhoto") if str(r.params.get("chat_id")) == str(alice_chat["id"])]
        if (result.params.get("reply_parameters") or {}).get("message_id") != sent["message"]["message_id"]:
            failures.append("the painting did not answer the photo just sent")
        edits = [r.params.get("text", "") for r in tg.calls("editMessageText", alice_chat["id"])]
        print(
            f"1. painting delivered {took:.1f} s after the photo; status went through: "
            + " | ".join(dict.fromkeys(e.split("\n")[0][:40] for e in edits))
        )

        await stack.run("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")
        beats = ""
        for _ in range(120):
            beats = await stack.run(
                "exec", "-T", "redis", "redis-cli", "--scan", "--pattern", "nst:worker:*", quiet=True
            )
            if len(beats.split()) >= 2:
                break
            await asyncio.sleep(1)
        print(f"2. workers with a heartbeat: {sorted(beats.split())}")
        if len(beats.split()) < 2:
            failures.append("the second worker never reported")
        tg.send_photo(alice_chat, alice, photo_bytes(2), caption="great-wave")
        tg.send_photo(bob_chat, bob, photo_bytes(3), caption="the-scream")
        took = max(await wait_photos(tg, alice_chat["id"], 2, 600), await wait_photos(tg, bob_chat["id"], 1, 600))
        await asyncio.sleep(6)  # one heartbeat, so that each worker's count is current
        done_by = {}
        for key in beats.split():
            raw = await stack.run("exec", "-T", "redis", "redis-cli", "GET", key, quiet=True)
            done_by[key.rsplit(":", 1)[-1]] = json.loads(raw)["jobs_done"]
        print(f"   both delivered within {took:.1f} s; jobs done per worker: {done_by}")

        await stack.run("stop", "worker-cpu")
        tg.send_photo(bob_chat, bob, photo_bytes(4), caption="starry-night")
        await tg.wait_for(  # Bob's second job is in the queue, with no worker to take it
            "sendMessage",
            lambda r: str(r.params.get("chat_id")) == str(bob_chat["id"]) and "queue" in str(r.params.get("text", "")),
            count=2,
            timeout=60,
        )
        await stack.run("restart", "redis")
        await stack.run("start", "worker-cpu")
        took = await wait_photos(tg, bob_chat["id"], 2, 600)
        print(f"3. a job queued across a Redis restart delivered {took:.1f} s after the restart")

        for service in ("bot", "worker-cpu"):  # SIGTERM, as `down` sends: each must stop on its own
            t0 = time.monotonic()
            await stack.run("stop", service)
            print(f"4. {service} stopped in {time.monotonic() - t0:.1f} s (grace period: 30 s bot, 2 min worker)")
        await stack.run("down")
        left = (await stack.run("ps", "-q", quiet=True)).split()
        if left:  # podman-compose 1.6's `down` and `stop` miss replicas added by --scale
            print(f"   note: {len(left)} container(s) left after down; removing them")
            for container in left:
                engine = shlex.split(args.compose)[0].removesuffix("-compose")  # docker, podman
                await (await asyncio.create_subprocess_exec(engine, "rm", "-f", container)).wait()
        await stack.run("down", "-v", quiet=True, check=False)
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        print((await stack.run("logs", check=False, quiet=True))[-6000:])
        await stack.run("down", "-v", check=False)
    finally:
        await tg.stop()
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
