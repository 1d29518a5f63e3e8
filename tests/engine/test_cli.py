"""The `nst` command as a user types it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_core.cli import main
from nst_core.device import compute_dtype
from tests.conftest import ROOT, SHARED_CONTENT

PHOTO = str(SHARED_CONTENT / "rocket.jpg")
NOT_AN_IMAGE = str(ROOT / "pyproject.toml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stylize_writes_the_picture_and_reports_the_time(tmp_path, capsys):
    out = tmp_path / "painted.png"
    code, stdout, err = run(
        capsys, "stylize", PHOTO, "--preset", "great-wave", "--size", "64", "--quality", "fast", "-o", str(out)
    )
    assert code == 0, err
    img = Image.open(out)
    assert img.format == "PNG" and max(img.size) == 64
    assert "saved" in stdout and " s on cpu (" in stdout
    # ...and in which precision, which explains the time.
    bf16 = compute_dtype("cpu") == torch.bfloat16
    assert ("bfloat16 convolutions" in stdout) == bf16, stdout
    # Not a terminal (a log, a pipe): plain progress lines, no carriage-return bar updates.
    lines = [line for line in err.splitlines() if "s left" in line]
    assert len(lines) >= 2 and all("step" in line and "%" in line for line in lines), err
    assert "\r" not in err
    # Seconds from the very first step: the step timed beforehand, before any progress to extrapolate.
    assert re.search(r"step 1/\d+, .*, \d+ s left", lines[0]), lines[0]


def test_own_style_file_and_blend(tmp_path, capsys):
    style = tmp_path / "style.png"
    Image.effect_noise((80, 80), 60).convert("RGB").save(style)
    out = tmp_path / "out.jpg"
    code, _, err = run(
        capsys,
        "stylize",
        PHOTO,
        "--style",
        str(style),
        "--preset",
        "the-scream",
        "--style-weights",
        "1",
        "3",
        "--size",
        "64",
        "--quality",
        "fast",
        "--quiet",
        "-o",
        str(out),
    )
    assert code == 0, err
    assert Image.open(out).format == "JPEG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stylize", PHOTO, "-o", "x.jpg"], "give a style"),
        (["stylize", PHOTO, "--preset", "stary-night", "-o", "x.jpg"], "Did you mean 'starry-night'"),
        (["stylize", PHOTO, "--preset", "nope", "-o", "x.jpg"], "The presets are: starry-night, great-wave, "),
        (["stylize", PHOTO, "--preset", "great-wave", "--strength", "12", "-o", "x.jpg"], "strength must be from 1"),
        (["stylize", PHOTO, "--preset", "great-wave", "--size", "20", "-o", "x.jpg"], "size must be from 64"),
        (["stylize", NOT_AN_IMAGE, "--preset", "great-wave", "-o", "x.jpg"], "not an image"),
        (["stylize", "missing.jpg", "--preset", "great-wave", "-o", "x.jpg"], "no such file"),
        (["stylize", PHOTO, "--preset", "great-wave", "-o", "x.gif"], "must end in"),
        (["stylize", PHOTO, "--preset", "great-wave", "--device", "cuda:3", "-o", "x.jpg"], "not available"),
        (
            ["stylize", PHOTO, "--preset", "great-wave", "the-scream", "--style-weights", "1", "-o", "x.jpg"],
            "1 style weights for 2",
        ),
        (["presets", "fetch"], "--all"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst: error:") and message in lines[0]


def test_an_output_that_would_destroy_an_input_or_fail_is_refused_before_painting(capsys, tmp_path):
    """-o naming the photo overwrote it without a word; -o naming a folder failed only after the
    whole painting; a bad style among several did not say which file it was."""
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(Path(PHOTO).read_bytes())
    (tmp_path / "out.jpg").mkdir()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(PHOTO).read_bytes()[:2000])
    cases = [
        (["-o", str(photo)], f"output {photo} is one of the input files"),
        (["-o", str(tmp_path / "out.jpg")], f"output {tmp_path / 'out.jpg'} is a folder"),
        (["--style", str(broken), "-o", str(tmp_path / "p.jpg")], "the style image broken.jpg is truncated"),
        (["--style", str(tmp_path), "-o", str(tmp_path / "p.jpg")], f"the style image {tmp_path.name} is a folder"),
    ]
    for extra, message in cases:
        code, _, err = run(capsys, "stylize", str(photo), "--preset", "great-wave", "--size", "64", *extra)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith(f"nst: error: {message}"), err
    assert photo.read_bytes() == Path(PHOTO).read_bytes(), "the photo was kept"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stylize", PHOTO, "--preset", "great-wave", "--quality", "wrong"], "nst stylize: error: argument --quality"),
        (["stylize", PHOTO, "--preset", "great-wave", "--strength", "2.5"], "invalid int value: '2.5'"),
        (["stylize", PHOTO, "--preset", "great-wave"], "the following arguments are required: -o/--output"),
        (["paint", PHOTO], "nst: error: argument command: invalid choice: 'paint'"),
    ],
)
def test_a_mistyped_command_line_is_one_line_too(capsys, argv, message):
    """argparse printed its five-line usage block before the reason."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and message in lines[0] and lines[0].endswith("--help)")


def test_presets_list_and_fetch(capsys):
    code, out, _ = run(capsys, "presets", "fetch", "water-lilies")
    assert code == 0 and "water-lilies" in out
    code, out, _ = run(capsys, "presets", "list")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("water-lilies"))
    assert "Claude Monet" in row and "cached" in row
    assert sum(1 for line in out.splitlines() if "  " in line) >= 12  # header + 11 presets
    shipwreck = next(line for line in out.splitlines() if line.startswith("shipwreck"))
    assert "The Wreck of a Transport Ship (often labelled '…" in shipwreck  # cut, and says so


def test_console_script_fails_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nst_core.cli",
            "stylize",
            str(tmp_path / "none.png"),
            "--preset",
            "great-wave",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("nst: error:")


def test_a_reader_that_leaves_early_ends_the_listing_quietly():
    """`nst presets list | head -1`: no error line when head stops reading."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_core.cli", "presets", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # before the interpreter has started: every write of the listing fails
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == ""
