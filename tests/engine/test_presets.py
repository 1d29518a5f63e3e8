"""The catalog holds the facts; images come into a verified cache."""

import json
import re

import pytest

from nst_core import presets
from tests.conftest import SHARED_PRESETS

SHARED_CATALOG = SHARED_PRESETS / "catalog.json"


def test_catalog_matches_the_shared_facts():
    shared = {e["slug"]: e for e in json.loads(SHARED_CATALOG.read_text())}
    ours = presets.catalog()
    assert set(ours) == set(shared) and len(ours) == 11
    for slug, p in ours.items():
        assert (p.sha256, p.raw_url, p.title, p.artist) == (
            shared[slug]["sha256"],
            shared[slug]["raw_url"],
            shared[slug]["title"],
            shared[slug]["artist"],
        )
        assert p.public_domain_reason


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(presets.PresetError, match="Did you mean 'starry-night'"):
        presets.get("stary-nite")
    assert presets.get("Starry Night").slug == "starry-night"


def test_suggestions_come_from_names_people_use_not_from_chance_letters():
    # Against the slugs alone, "picasso" was "the-kiss"; the painter's name and the
    # words of the title are what people misspell.
    assert presets.suggest("picasso") is None and presets.suggest("hello there") is None
    assert presets.suggest("wheat feild") == "wheat-field-cypresses"
    assert presets.suggest("hokusia") == "great-wave" and presets.suggest("monett") == "water-lilies"


def test_short_titles_leave_out_the_cataloguers_notes():
    great_wave, mondrian = presets.get("great-wave"), presets.get("mondrian-composition")
    assert great_wave.short_title == "The Great Wave" and "(The Great Wave)" in great_wave.title
    assert "unverified" not in mondrian.short_title and "unverified" in mondrian.title
    assert presets.get("the-scream").short_title == presets.get("the-scream").title


def test_fetch_verifies_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_PRESET_DIR", str(tmp_path))
    path = presets.fetch("great-wave")
    assert path.parent == tmp_path and presets.sha256_of(path) == presets.get("great-wave").sha256
    assert presets.is_cached("great-wave")
    assert not list(tmp_path.glob("*.part"))
    # Readable by all: a cache filled by root (or a build step) must serve the bot's own user.
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_cache_folder_it_cannot_write_is_named(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("NST_PRESET_DIR", str(tmp_path / "a-file" / "presets"))
    with pytest.raises(presets.PresetError) as err:
        presets.fetch("great-wave")
    assert str(err.value) == (
        f"cannot write the preset cache {tmp_path / 'a-file' / 'presets'} (Not a directory); "
        "set NST_PRESET_DIR to a folder you can write"
    )


def test_tampered_source_is_refused_and_nothing_is_left_behind(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    original = SHARED_PRESETS / "the-scream.jpg"
    data = bytearray(original.read_bytes())
    data[5000] ^= 0xFF
    (source / "the-scream.jpg").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    monkeypatch.setenv("NST_PRESET_DIR", str(cache))
    monkeypatch.setenv("NST_PRESET_SOURCE_DIR", str(source))
    with pytest.raises(presets.PresetError, match="refused"):
        presets.fetch("the-scream")
    assert not (cache / "the-scream.jpg").exists()
    assert not list(cache.glob("*"))


def test_a_damaged_cached_file_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_PRESET_DIR", str(tmp_path))
    path = presets.fetch("shipwreck")
    path.write_bytes(b"not the painting")
    assert not presets.is_cached("shipwreck")
    assert presets.sha256_of(presets.fetch("shipwreck")) == presets.get("shipwreck").sha256


def test_unreachable_source_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_PRESET_DIR", str(tmp_path))
    monkeypatch.delenv("NST_PRESET_SOURCE_DIR")
    # Point the catalog entry at a closed local port so nothing leaves the machine.
    bad = presets.Preset(**{**presets.get("the-kiss").__dict__, "raw_url": "http://127.0.0.1:9/none.png"})
    monkeypatch.setitem(presets.catalog(), "the-kiss", bad)
    with pytest.raises(presets.PresetError) as err:
        presets.fetch("the-kiss", timeout=2)
    # The painting and the host by name, and the reason without urllib's wrapping.
    title = presets.get("the-kiss").title
    assert str(err.value) == f"could not download the painting {title!r} from 127.0.0.1 (Connection refused)"
    assert not list(tmp_path.glob("*"))
    # A source folder without the file: it was passed over in silence.
    monkeypatch.setenv("NST_PRESET_SOURCE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(presets.PresetError, match=re.escape(f"NST_PRESET_SOURCE_DIR={tmp_path / 'elsewhere'} has no ")):
        presets.fetch("the-kiss", timeout=2)


def test_fetch_missing_fills_the_cache_and_says_once_what_failed(tmp_path, monkeypatch, caplog):
    source = tmp_path / "source"
    source.mkdir()
    for p in presets.catalog().values():
        if p.slug != "the-kiss":
            (source / p.file).symlink_to(SHARED_PRESETS / p.file)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NST_PRESET_DIR", str(cache))
    monkeypatch.setenv("NST_PRESET_SOURCE_DIR", str(source))
    bad = presets.Preset(**{**presets.get("the-kiss").__dict__, "raw_url": "http://127.0.0.1:9/none.png"})
    monkeypatch.setitem(presets.catalog(), "the-kiss", bad)
    with caplog.at_level("WARNING", logger="nst_core.presets"):
        assert presets.fetch_missing(timeout=2) == ["the-kiss"]
    assert [slug for slug in presets.catalog() if presets.is_cached(slug)] == [
        slug for slug in presets.catalog() if slug != "the-kiss"
    ]
    (warning,) = caplog.messages
    assert "could not fetch 1 of 11 (the-kiss): could not download the painting" in warning
    assert "NST_PRESET_SOURCE_DIR" in warning
    assert not list(cache.glob("*.part"))
