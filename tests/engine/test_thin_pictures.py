"""Long, thin pictures: painted with a short side the network can see, or refused with a reason.

A 1000x60 photo at 256 px used to become 256x15 (128x8 at the coarse scale) and die
in VGG19's pooling with "Output size is too small", which the user read as
"something went wrong; please try again", again and again.
"""

import io
import random
import subprocess
import sys

import pytest
from PIL import Image

from nst_core import device, presets
from nst_core.images import ImageError, fit_long_side, resize
from nst_core.runner import user_message
from nst_core.schedule import MIN_COARSE_SIDE, MIN_SIDE, STEPS, paint_size, plan, plan_at, plan_for
from nst_core.settings import MAX_SIZE, Quality, StyleSettings
from nst_core.transfer import style_size, stylize
from tests.conftest import SHARED_CONTENT


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    img = Image.open(SHARED_CONTENT / "chelsea-cat.png").convert("RGB")
    return resize(img, fit_long_side(img.size, 96))


@pytest.fixture(scope="module")
def starry() -> Image.Image:
    img = presets.load_preset_image("starry-night")
    return resize(img, fit_long_side(img.size, 96))


# --- the size a picture is painted at (torch-free) -----------------------------------------


def test_a_thin_picture_gets_the_minimum_short_side_and_keeps_its_aspect() -> None:
    for size, expected in [((1000, 60), (533, 32)), ((60, 1000), (32, 533))]:
        assert paint_size(size, 256) == expected
        # The long side grows past what was asked, whatever that was under it.
        assert paint_size(size, 64) == paint_size(size, 512) == expected
        w, h = expected
        assert w / h == pytest.approx(size[0] / size[1], rel=0.01)
    # Everything else keeps the asked long side, exactly as before.
    for size in [(1600, 1200), (1200, 1600), (640, 480), (1000, 250), (3, 2), (40, 30), (4000, 500)]:
        for long_side in (256, 512, 4096):
            assert paint_size(size, long_side) == fit_long_side(size, long_side)
    assert paint_size((640, 320), 64) == (64, 32)


def test_a_picture_too_thin_even_at_the_largest_size_is_refused_with_the_ratio_that_fits() -> None:
    assert paint_size((1280, 10), 256) == (MAX_SIZE, MIN_SIDE)  # 1:128 is the most the ceiling allows
    with pytest.raises(ImageError) as refused:
        paint_size((4000, 20), 256)
    assert str(refused.value) == (
        "the photo is too long and thin to paint (4000×20); at most 1:128 fits, so crop it first"
    )
    # A smaller device allows less: 1024 px over 32.
    assert paint_size((320, 10), 256, max_side=1024) == (1024, 32)
    with pytest.raises(ImageError, match=r"\(20×1100\); at most 1:32 fits"):
        paint_size((20, 1100), 256, max_side=1024)


def test_the_bot_can_size_a_picture_without_loading_torch() -> None:
    code = (
        "import sys; from nst_core.schedule import paint_size; assert paint_size((1000, 60), 256) == (533, 32); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the schedule ---------------------------------------------------------------------------


def _old_plan(size: tuple[int, int], quality: Quality) -> list[tuple[int, int]]:
    """The scales plan() made before it knew of MIN_SIDE."""
    sizes = [size]
    while len(sizes) < len(STEPS[quality]) and max(sizes[-1]) // 2 >= MIN_COARSE_SIDE:
        sw, sh = sizes[-1]
        sizes.append((max(1, round(sw / 2)), max(1, round(sh / 2))))
    return sizes[::-1]


def test_no_scale_is_too_thin_for_the_network_and_ordinary_plans_are_unchanged() -> None:
    assert [(s.width, s.height) for s in plan((512, 100), Quality.BALANCED)] == [(256, 50), (512, 100)]
    assert [s.steps for s in plan((512, 100), Quality.BALANCED)] == list(STEPS[Quality.BALANCED][1:])
    (one,) = plan((533, 32), Quality.FAST)  # the 1000x60 photo at 256 px: no coarse scale at all
    assert one.steps == STEPS[Quality.FAST][-1] + sum(STEPS[Quality.FAST][:-1]) // 2
    for long_side in (64, 256, 512, 768, 1024, 2048, 4096):
        for ratio in (1, 1.33, 1.5, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 64, 100, 128):
            for quality in Quality:
                size = paint_size((round(1000 * ratio), 1000), long_side)
                scales = [(s.width, s.height) for s in plan(size, quality)]
                assert all(min(s) >= MIN_SIDE for s in scales), (size, quality, scales)
                old = _old_plan(size, quality)
                if all(min(s) >= MIN_SIDE for s in old):
                    assert scales == old, (size, quality)


def test_the_queue_estimates_the_schedule_that_is_painted() -> None:
    settings = StyleSettings(size=256, quality=Quality.BALANCED)
    assert plan_for(_jpeg((1000, 60)), settings, 512) == plan((533, 32), Quality.BALANCED)
    assert plan_at((60, 1000), settings, 512) == plan((32, 533), Quality.BALANCED)
    assert plan_for(_jpeg((4000, 20)), settings, 512) is None  # refused at once: nothing to wait for


# --- painting -------------------------------------------------------------------------------


def test_a_long_thin_photo_is_painted(starry) -> None:
    seen = []
    photo = _noise((1000, 60))
    out = stylize(photo, [starry], StyleSettings(size=256, quality="fast"), progress=seen.append, steps=(3, 2))
    assert out.size == (533, 32)
    assert min(out.size) >= MIN_SIDE and out.width / out.height == pytest.approx(1000 / 60, rel=0.01)
    painted = [(s.width, s.height, s.steps) for s in plan_at(photo.size, StyleSettings(size=256), 512, (3, 2))]
    assert [(p.width, p.height) for p in seen] == [(w, h) for w, h, n in painted for _ in range(n)]


@pytest.mark.parametrize("strip", [(4000, 20), (20, 4000)])
def test_a_thin_style_image_is_used(cat, starry, strip) -> None:
    style = starry.resize(strip)
    out = stylize(cat, [style], StyleSettings(size=96), steps=(2, 2))
    assert out.size == cat.size
    # What the network sees of it: cropped to 4:1, then never under the minimum.
    assert style_size((80, 20), 96 * 64) == (156, 39)  # the area asked for
    assert style_size((80, 20), 48 * 32) == (128, 32)  # a quarter of it would be 20 px high


def test_a_small_style_scale_on_a_small_picture_stays_within_reach_of_the_network(cat, starry) -> None:
    """At 64 px and style scale 0.25 the painting used to be resized to 16x12."""
    out = stylize(cat, [starry], StyleSettings(size=64, style_scale=0.25), steps=(2,))
    assert out.size == fit_long_side(cat.size, 64)


def test_a_photo_too_thin_for_the_device_is_refused_with_a_message_for_the_user(starry) -> None:
    longest = device.max_size("cpu", 20 / 4000)
    seen = []
    with pytest.raises(ImageError) as refused:
        stylize(_noise((4000, 20)), [starry], StyleSettings(size=longest), progress=seen.append, steps=(1,))
    message = (
        f"the photo is too long and thin to paint (4000×20); at most 1:{longest // MIN_SIDE} fits, so crop it first"
    )
    assert str(refused.value) == message
    assert user_message(refused.value) == message  # not "something went wrong"
    assert seen == []  # refused before the first step
