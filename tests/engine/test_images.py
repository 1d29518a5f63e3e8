"""Every kind of upload people send: odd modes are converted, broken files get a clear error."""

import io
import subprocess
import sys

import pytest
from PIL import Image

from nst_core.images import ImageError, encode, open_image, save_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgba_is_composited_over_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = open_image(_bytes(img, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (16, 12), (200, 100, 50)).convert(mode if mode != "I;16" else "L")
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    if mode == "I;16":
        img = Image.new("I;16", (16, 12), 40000)
    out = open_image(_bytes(img, fmt))
    assert out.mode == "RGB" and out.size == (16, 12)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    img = Image.new("I;16", (4, 4), 32768)  # mid-grey in 16 bits
    r, g, b = open_image(_bytes(img, "PNG")).getpixel((1, 1))
    assert r == g == b and 120 <= r <= 135


def test_palette_with_transparency_goes_over_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    out = open_image(_bytes(img, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    r, g, b = open_image(data).getpixel((4, 4))
    assert r > 200 and g < 50 and b < 50


def test_animated_webp_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 0, 255), (255, 0, 0)]]
    data = _bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    r, _g, b = open_image(data).getpixel((4, 4))
    assert b > 200 and r < 50


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = open_image(_bytes(img, "JPEG", exif=exif))
    assert out.size == (10, 20)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n", "not an image"),
        (b"hello, this is text", "not an image"),
    ],
)
def test_non_images_get_a_clear_error(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data, what="photo")


def test_an_iphone_heic_file_is_read(tmp_path):
    """Sent as a file to keep full quality, an iPhone photo is HEIC (the `heic` extra reads it;
    libheif itself turns it upright, from the file's own rotation box)."""
    img = Image.new("RGB", (48, 32), (200, 40, 30))
    img.paste((20, 40, 220), (0, 0, 24, 32))  # left half blue: a flipped decode would show
    data = _bytes(img, "HEIF", quality=90)
    assert data[4:12] == b"ftypheic"
    out = open_image(data, what="photo")
    assert out.mode == "RGB" and out.size == (48, 32)
    left, right = out.getpixel((6, 16)), out.getpixel((42, 16))
    assert left[2] > 170 and left[0] < 80, left
    assert right[0] > 170 and right[2] < 80, right
    (tmp_path / "IMG_0001.HEIC").write_bytes(data)
    assert open_image(tmp_path / "IMG_0001.HEIC").size == (48, 32)


def test_without_the_heic_extra_a_heic_file_is_named_with_the_extra_it_needs(tmp_path):
    """Without pillow-heif (the default install), the message says what the file is and what reads it."""
    data = _bytes(Image.new("RGB", (16, 16)), "HEIF")
    (tmp_path / "IMG_0002.HEIC").write_bytes(data)
    script = (
        "import sys; sys.modules['pillow_heif'] = None\n"  # as if the extra were not installed
        "from nst_core.images import HEIF_SUPPORT, HeicNotSupported, open_image\n"
        "assert not HEIF_SUPPORT\n"
        "for source in (open(sys.argv[1], 'rb').read(), sys.argv[1]):\n"
        "    try:\n"
        "        open_image(source, what='photo')\n"
        "    except HeicNotSupported as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "IMG_0002.HEIC")], capture_output=True, text=True, check=True
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("HEIC file (the iPhone's format)" in line for line in lines), out
    assert "needs the `heic` extra" in lines[0]


def test_truncated_image_is_reported_as_such():
    data = _bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupted"):
        open_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    data = _bytes(Image.new("L", (9000, 9000)), "PNG")  # 81 MP, a few KB on disk
    with pytest.raises(ImageError, match="too large"):
        open_image(data, what="photo")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        open_image(tmp_path / "empty.png")


def test_output_format_follows_the_extension(tmp_path):
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    assert Image.open(save_image(img, tmp_path / "a.jpg")).format == "JPEG"
    assert Image.open(save_image(img, tmp_path / "a.png")).format == "PNG"
    with pytest.raises(ImageError, match="must end in"):
        save_image(img, tmp_path / "a.bmp")
    assert Image.open(io.BytesIO(encode(img, "PNG"))).format == "PNG"
