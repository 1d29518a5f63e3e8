"""What a picture costs: the schedule read from a photo's header, and the step-cost line."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from nst_core.schedule import StepCost, plan, plan_for
from nst_core.settings import Quality, StyleSettings


def _jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, (90, 140, 200))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_a_photos_schedule_comes_from_its_header_and_the_settings() -> None:
    settings = StyleSettings(size=512, quality=Quality.BALANCED)
    assert plan_for(_jpeg((1600, 1200)), settings, 768) == plan((512, 384), Quality.BALANCED)
    # No size in the settings: the engine's default long side for the device.
    assert plan_for(_jpeg((1600, 1200)), StyleSettings(), 256) == plan((256, 192), Quality.BALANCED)
    # A test's step override is the schedule the job will really follow.
    assert plan_for(_jpeg((1600, 1200)), settings, 768, steps=(3,)) == plan((512, 384), Quality.BALANCED, (3,))


def test_a_rotated_photo_costs_what_the_upright_one_does() -> None:
    settings = StyleSettings(size=640)
    upright = plan_for(_jpeg((600, 800)), settings, 512)
    rotated = plan_for(_jpeg((800, 600), orientation=6), settings, 512)  # shown as 600x800
    assert upright is not None and rotated is not None
    assert StepCost().seconds(upright) == StepCost().seconds(rotated)


@pytest.mark.parametrize("data", [b"", b"certainly not an image", _jpeg((40, 30))[:20]])
def test_an_unreadable_photo_has_no_schedule(data: bytes) -> None:
    assert plan_for(data, StyleSettings(), 512) is None


def test_the_step_cost_line_goes_through_both_measurements() -> None:
    cost = StepCost.fit((4096, 0.010), (16384, 0.034))
    assert cost.per_pixel_s == pytest.approx(0.024 / 12288)
    assert cost.fixed_s == pytest.approx(0.010 - 4096 * 0.024 / 12288)
    schedule = plan((512, 341), Quality.BALANCED)
    expected = sum(s.steps * (cost.fixed_s + cost.per_pixel_s * s.pixels) for s in schedule)
    assert cost.seconds(schedule) == pytest.approx(expected)
    # A GPU whose small steps all cost the same: a fixed cost and nothing negative per pixel.
    flat = StepCost.fit((4096, 0.005), (16384, 0.0049))
    assert flat.per_pixel_s == 0 and flat.fixed_s == pytest.approx(0.0049)
