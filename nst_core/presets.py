"""The preset paintings: a catalog in the package, images fetched into a cache.

The repository holds facts about the paintings (title, artist, licence, pinned
source URL, sha256), never the images.  ``fetch`` downloads an image by its
pinned URL, checks the hash and writes it atomically; a file whose hash
differs is refused, so a tampered or truncated cache never reaches a user.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image

CACHE_ENV = "NST_PRESET_DIR"
#: A folder of already-downloaded preset files (e.g. ``../shared/presets``) used
#: instead of the network; tests and CI point it at the shared copies.
SOURCE_ENV = "NST_PRESET_SOURCE_DIR"

log = logging.getLogger(__name__)


class PresetError(ValueError):
    """A preset is unknown, unavailable or fails its hash check; the message is for the user."""


@dataclass(frozen=True)
class Preset:
    slug: str
    title: str
    artist: str
    year: str
    artist_died: int
    file: str
    sha256: str
    bytes: int
    width: int
    height: int
    raw_url: str
    source_repo: str
    source_commit: str
    source_path: str
    public_domain_reason: str
    #: What people call it, where ``title`` carries a cataloguer's notes: "The Great Wave",
    #: not "Under the Wave off Kanagawa (The Great Wave)".  Empty: the title says it.
    name: str = ""

    @property
    def short_title(self) -> str:
        """For buttons and captions; ``title`` stays for attributions."""
        return self.name or self.title

    @property
    def label(self) -> str:
        return f"{self.title} — {self.artist}, {self.year}"


@functools.cache
def catalog() -> dict[str, Preset]:
    text = resources.files("nst_core").joinpath("presets.json").read_text(encoding="utf-8")
    return {entry["slug"]: Preset(**entry) for entry in json.loads(text)}


def get(slug: str) -> Preset:
    """The preset called ``slug``, or a PresetError that suggests the closest name."""
    presets = catalog()
    key = slug.strip().lower().replace("_", "-").replace(" ", "-")
    if key in presets:
        return presets[key]
    close = difflib.get_close_matches(key, list(presets), n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else f" The presets are: {', '.join(presets)}."
    raise PresetError(f"there is no preset called {slug!r}.{hint}")


def suggest(name: str) -> str | None:
    """The slug of the preset whose slug, name or painter's surname ``name`` is a misspelling of.

    Against the slugs alone, with a low cutoff, "picasso" came out as "the-kiss".
    """
    names: dict[str, str] = {}
    for p in catalog().values():
        painter = p.artist.lower().split()
        for known in (p.slug, p.slug.replace("-", " "), p.short_title.lower(), " ".join(painter[1:]), painter[-1]):
            names.setdefault(known, p.slug)
    close = difflib.get_close_matches(name.strip().lower(), list(names), n=1, cutoff=0.6)
    return names[close[0]] if close else None


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("nst-bot")) / "presets"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _install(preset: Preset, data_path: Path, dest: Path) -> Path:
    """Verify ``data_path`` against the catalog and move it into place atomically."""
    digest = sha256_of(data_path)
    if digest != preset.sha256:
        raise PresetError(
            f"preset {preset.slug!r}: file has sha256 {digest[:12]}…, expected {preset.sha256[:12]}…; refused"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    data_path.chmod(0o644)  # mkstemp's 0600 would hide a cache filled by root from the bot's own user
    os.replace(data_path, dest)
    return dest


def path(slug: str) -> Path:
    """Where the preset's image lives in the cache (it may not be there yet)."""
    preset = get(slug)
    return cache_dir() / preset.file


def is_cached(slug: str) -> bool:
    """True if the cached file exists and has the catalog's hash."""
    p = path(slug)
    return p.is_file() and sha256_of(p) == get(slug).sha256


def fetch(slug: str, *, timeout: float = 60.0) -> Path:
    """Make sure the preset is in the cache, downloading it if needed; returns its path."""
    preset = get(slug)
    dest = cache_dir() / preset.file
    if dest.is_file():
        if sha256_of(dest) == preset.sha256:
            return dest
        dest.unlink(missing_ok=True)  # damaged or tampered: fetch it again
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{preset.slug}.", suffix=".part")
    except OSError as exc:
        raise PresetError(
            f"cannot write the preset cache {dest.parent} ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a folder you can write"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            source_dir = os.environ.get(SOURCE_ENV)
            local = Path(source_dir) / preset.file if source_dir else None
            if local is not None and local.is_file():
                with local.open("rb") as src:
                    shutil.copyfileobj(src, out)
            else:
                try:
                    with urllib.request.urlopen(preset.raw_url, timeout=timeout) as resp:
                        shutil.copyfileobj(resp, out)
                except OSError as exc:
                    host = urllib.parse.urlsplit(preset.raw_url).hostname
                    not_there = f"; {SOURCE_ENV}={source_dir} has no {preset.file} either" if source_dir else ""
                    raise PresetError(
                        f"could not download the painting {preset.title!r} from {host} ({_reason(exc)}){not_there}"
                    ) from None
        return _install(preset, tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _reason(exc: OSError) -> str:
    """'Name or service not known' rather than '<urlopen error [Errno -2] Name or service not known>'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def fetch_missing(*, timeout: float = 30.0) -> list[str]:
    """Fetch every preset that is not in the cache yet; returns the slugs that failed.

    Services run this in the background at start-up, so the first person to pick a
    painting does not wait for its download, and a host that cannot reach the
    sources says so in its log at once instead of in someone's failed picture.
    """
    failed: list[tuple[str, str]] = []
    fetched = 0
    for slug in catalog():
        try:
            if is_cached(slug):
                continue
            fetch(slug, timeout=timeout)
            fetched += 1
        except (PresetError, OSError) as exc:
            failed.append((slug, str(exc)))
    if failed:
        log.warning(
            "presets: could not fetch %d of %d%s: %s. They are tried again when someone picks one; "
            "`nst presets fetch --all` retries by hand, or %s can name a folder that holds the files.",
            len(failed),
            len(catalog()),
            "" if len(failed) == len(catalog()) else f" ({', '.join(slug for slug, _ in failed)})",
            failed[0][1],
            SOURCE_ENV,
        )
    elif fetched:
        log.info("presets: fetched %d into %s", fetched, cache_dir())
    return [slug for slug, _ in failed]


def fetch_missing_in_background() -> None:
    """``fetch_missing`` on a daemon thread: a slow download never holds up start or shutdown."""
    threading.Thread(target=fetch_missing, name="preset-fetch", daemon=True).start()


@functools.lru_cache(maxsize=16)
def _load_cached(file_path: str, mtime: float) -> Image.Image:
    from nst_core.images import open_image

    return open_image(Path(file_path), what="preset")


def load_preset_image(slug: str) -> Image.Image:
    """The preset as an RGB image (fetched into the cache first if needed)."""
    p = fetch(slug)
    return _load_cached(str(p), p.stat().st_mtime)
