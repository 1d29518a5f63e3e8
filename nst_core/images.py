"""Turning whatever people upload into clean RGB images, and images into files.

Uploads come from phones and the web: rotated JPEGs, palette PNGs with
transparency, CMYK print files, 16-bit scans, animated GIFs, and sometimes
things that are not images at all.  Every failure here raises ``ImageError``
with a message that names the problem, never a PIL traceback.

PIL only, no torch: the bot validates uploads with this module, and a bot that
sends its jobs to GPU workers should not have to load torch for that.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # iPhones' files are HEIC; the extra is opt-in because pillow-heif's wheels are GPLv2 (see the README)
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF_SUPPORT = False
else:
    register_heif_opener()
    HEIF_SUPPORT = True

#: Major brands of HEIF files (ISO/IEC 23008-12) as phones write them; AVIF, a HEIF
#: with its own brand, is read by Pillow itself.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

#: Refuse anything larger before decoding it (a decompression bomb is a tiny file
#: that decodes to gigabytes).  50 megapixels covers every phone camera.
MAX_INPUT_PIXELS = 50_000_000


class ImageError(ValueError):
    """An input is not a usable image; the message is meant for the end user."""


class HeicNotSupported(ImageError):
    """A HEIC file where the optional reader is not installed: a front-end may know a way round it."""


def open_image(source: bytes | str | Path, *, what: str = "image", max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Decode ``source`` (bytes or a path) into an RGB image, upright, first frame only."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageError(f"the {what} is empty (0 bytes)")
        fp: io.BytesIO | Path = io.BytesIO(bytes(source))
        the = f"the {what}"
    else:  # named in every message: a command line may give several files
        fp = Path(source)
        the = f"the {what} {fp.name}"
        if fp.is_dir():
            raise ImageError(f"{the} is a folder, not an image file")
        if not fp.is_file():
            raise ImageError(f"{what} {fp.name}: no such file")
        if fp.stat().st_size == 0:
            raise ImageError(f"{the} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{the} is too large: {w}x{h} is {w * h / 1e6:.0f} megapixels, the limit is {max_pixels / 1e6:.0f}"
                )
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            if _is_heif(fp):
                raise HeicNotSupported(
                    f"{the} is a HEIC file (the iPhone's format); reading it needs the `heic` extra "
                    "(pip install 'nst-bot[heic]')"
                ) from None
            raise ImageError(f"{the} can't be read: it is not an image, or not in a format I know") from None
        raise ImageError(f"{the} has too many pixels to open safely") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).lower()
        if "truncated" in msg or "broken" in msg or isinstance(exc, EOFError):
            raise ImageError(f"{the} is truncated or corrupted") from None
        raise ImageError(f"{the} could not be decoded ({exc})") from None
    return to_rgb(ImageOps.exif_transpose(img) or img)


def _is_heif(fp: io.BytesIO | Path) -> bool:
    """Whether the file starts with a HEIF ``ftyp`` box (only reached when no opener took it)."""
    if isinstance(fp, Path):
        with fp.open("rb") as f:
            head = f.read(12)
    else:
        head = fp.getvalue()[:12]
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any mode: transparency is composited over white, 16-bit is scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: PIL's 'L' conversion clips at 255, so scale instead.
        wide = img.convert("I")
        scale = 255 / 65535 if wide.getextrema()[1] > 255 else 1.0
        img = wide.point(lambda v: v * scale + 0.5).convert("L")  # +0.5: round, not truncate
    if img.mode == "F":
        img = img.point(lambda v: v * 255 if v <= 1 else v).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode == "CMYK":
        # Most CMYK files from Photoshop are inverted (Adobe); PIL handles the common case.
        return img.convert("RGB")
    return img.convert("RGB")


def fit_long_side(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) scaled so that the longer side is ``long_side`` (each side at least 1 px)."""
    w, h = size
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def fit_area(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """(w, h) scaled to about ``pixels`` in area, keeping the aspect ratio."""
    w, h = size
    # Height first, then width from the aspect ratio: the rounding pastiche uses, so that
    # benchmarks against it optimise on exactly the same pixels.
    new_h = max(1, round(math.sqrt(pixels * h / w)))
    return max(1, round(w / h * new_h)), new_h


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def save_image(img: Image.Image, path: str | Path) -> Path:
    """Save as PNG or JPEG (quality 95) by the extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        img.save(path, "JPEG", quality=95, subsampling=0, optimize=True)
    elif ext == ".png":
        img.save(path, "PNG")
    elif ext == ".webp":
        img.save(path, "WEBP", quality=95)
    else:
        raise ImageError(f"output must end in .jpg, .jpeg, .png or .webp, not {path.name!r}")
    return path


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        img.save(buf, "JPEG", quality=95, subsampling=0, optimize=True)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()
