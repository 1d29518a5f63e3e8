"""What people type for a painting ("starry night", "Léger", "van gogh's") matched to a preset.

Pure text work, kept apart from the handlers so it can be tested on its own.
"""

from __future__ import annotations

import re
import unicodedata

from nst_core import presets


def plain(text: str) -> str:
    """Lowercase words without accents, possessives or punctuation: "Léger's!" -> "leger"."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()
    folded = re.sub(r"['’]s\b", "", folded)
    return " ".join(re.findall(r"[a-z0-9]+", folded))


def _surnames(artist: str) -> set[str]:
    """ "Vincent van Gogh" -> {"vincent van gogh", "van gogh", "gogh"}: what a caption may call him."""
    words = plain(artist).split()
    return {" ".join(words), " ".join(words[1:]), words[-1]}


def _titles(p: presets.Preset) -> set[str]:
    """The names a painting goes by, as plain words (the slug's among them)."""
    return {plain(p.title), plain(p.short_title), plain(p.slug)}


def find_preset(text: str) -> tuple[str | None, tuple[str, ...]]:
    """(slug, ()) if ``text`` names a preset, else (None, the slugs it may mean).

    A name is the slug, a title, a part of exactly one of those or the painter's
    surname ("scream", "klimt"), in any case and with or without accents, spaces
    or a possessive; or a title named in a sentence ("like the starry night, please").
    """
    name = text.strip().strip("\"'“”").strip()
    if not name:
        return None, ()
    try:
        return presets.get(name).slug, ()
    except presets.PresetError:
        pass
    words = plain(name)
    if not words:
        return None, ()
    catalog = presets.catalog().values()
    for p in catalog:
        if words in _titles(p):
            return p.slug, ()
    # "scream", "the kiss", "mondrian", "starrynight": a part of exactly one slug or title, or the
    # painter's surname, is enough ("van gogh" is two paintings; "claude" may be the sitter).
    compact = words.replace(" ", "")
    partial = [
        p.slug
        for p in catalog
        if len(compact) >= 4
        and (
            any(words in title or compact in title.replace(" ", "") for title in _titles(p))
            or words in _surnames(p.artist)
        )
    ]
    if len(partial) == 1:
        return partial[0], ()
    if partial:  # "van gogh": offer both rather than guess one
        return None, tuple(partial)
    # A sentence that names one painting by its title means it; a painter alone is not enough
    # there ("with Tina Turner").
    padded = f" {words} "
    named = [p.slug for p in catalog if any(f" {title} " in padded for title in _titles(p) if len(title) >= 5)]
    if len(named) == 1:
        return named[0], ()
    # Only short texts are taken for a misspelt name; a sentence is just a caption.
    close = presets.suggest(words) if len(words.split()) <= 3 else None
    return None, (close,) if close else ()
