"""What a non-editable install (the Docker image, `pip install .`) gets.

The tests import the source tree, so a file missing from the wheel (the preset
catalog, say) would pass every other test and break every installed copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: What the Dockerfile copies into the image before `pip install .`.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "nst_core", "bot")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Built from a copy of the image's build context: no stale build/ or egg-info can help."""
    context = tmp_path_factory.mktemp("context")
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
        check=True,
        timeout=240,
    )
    (path,) = out.glob("nst_bot-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_the_preset_catalog_and_every_module(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "nst_core/presets.json" in names
    for package in ("nst_core", "bot"):
        for source in (ROOT / package).rglob("*.py"):
            assert source.relative_to(ROOT).as_posix() in names, f"{source} is not in the wheel"
    assert not any(n.startswith("tests/") for n in names), "the tests must not be installed"


def test_wheel_installs_the_three_commands(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for command in ("nst", "nst-bot", "nst-worker"):
        assert re.search(rf"^{command} = ", text, re.M), f"{command} is not installed"


def test_deployment_files_only_run_installed_commands() -> None:
    """The Dockerfile and Compose file start programs by name; a renamed script would break them."""
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    used = set(re.findall(r'"(nst[\w-]*)"', (ROOT / "Dockerfile").read_text()))
    used |= set(re.findall(r'\["(nst[\w-]*)"', (ROOT / "docker-compose.yml").read_text()))
    assert used, "no command found in the deployment files"
    assert used <= scripts, f"not installed: {used - scripts}"
