"""``nst-worker --check``: one line, exit 0 when device, weights and Redis are fine, 1 otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from celery_harness import ROOT, RedisServer, free_port, worker_env

pytestmark = pytest.mark.slow


def run_check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nst_core.celery_worker", "--check", "--device", "cpu"],
        env=worker_env(url), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_passes_against_a_live_redis(redis_server: RedisServer, preset_cache: Path) -> None:
    result = run_check(redis_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.strip()
    assert "\n" not in line and line.startswith("nst-worker check ok") and "cpu" in line
    # What the machine is worth to its users, from a step timed there: seconds, not a placeholder.
    found = re.search(r"a default picture \((\d+) px, balanced\) in about (\d+) s", line)
    assert found and int(found[1]) >= 64 and int(found[2]) >= 1, line


def test_check_fails_with_one_clear_line_when_redis_is_down(preset_cache: Path) -> None:
    result = run_check(f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    line = result.stdout.strip()
    assert "\n" not in line and line.startswith("nst-worker check FAILED: redis")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("NST_TORCH_THREADS", "abc", "NST_TORCH_THREADS must be a whole number above 0, not 'abc'"),
        ("NST_HEARTBEAT_TTL", "x", "NST_HEARTBEAT_TTL must be a number above 0, not 'x'"),
        ("NST_STEPS", "3,a", "steps must be positive whole numbers separated by commas, not '3,a'"),
        ("NST_LOG_LEVEL", "loud", "NST_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
        ("REDIS_URL", "notaurl", "REDIS_URL must start with redis://, rediss:// or unix://"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(variable: str, value: str, says: str) -> None:
    """They ended in tracebacks ("invalid literal for int()"), before the device was even looked at."""
    env = {**worker_env("redis://127.0.0.1:1/0"), variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "nst_core.celery_worker", "--check", "--device", "cpu"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"nst-worker: {says}")


def test_cuda_free_gives_each_worker_its_own_gpu(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled Compose replicas all see every GPU; the Redis claim spreads them out."""
    import types

    import torch

    from nst_core.celery_store import Keys
    from nst_core.celery_worker import claim_free_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=f"GPU-test-{i}"))
    client, keys = redis_server.client(), Keys("nst")
    assert claim_free_gpu(client, keys, "a", 5) == ("cuda:0", "nst:gpu:GPU-test-0")
    assert claim_free_gpu(client, keys, "b", 5) == ("cuda:1", "nst:gpu:GPU-test-1")
    with pytest.raises(ValueError, match="already have a worker"):
        claim_free_gpu(client, keys, "c", 5)
    client.delete("nst:gpu:GPU-test-0")  # worker a died: its claim expired
    assert claim_free_gpu(client, keys, "c", 5)[0] == "cuda:0"
    # Worker b restarted under its old name before its claim expired: it gets its GPU back.
    assert claim_free_gpu(client, keys, "b", 5) == ("cuda:1", "nst:gpu:GPU-test-1")
    client.delete("nst:gpu:GPU-test-0", "nst:gpu:GPU-test-1")
