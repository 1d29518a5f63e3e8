"""Matching what people type to a painting: the forms play-testers typed that found nothing."""

from __future__ import annotations

import pytest

from bot.style_names import find_preset, plain


@pytest.mark.parametrize(
    ("typed", "slug"),
    [
        ("starry-night", "starry-night"),
        ("Starry Night", "starry-night"),
        ("starrynight", "starry-night"),  # no space
        ("leger", "contrast-of-forms"),  # no accent
        ("Léger", "contrast-of-forms"),
        ("Nymphéas", "water-lilies"),
        ("Great wave!", "great-wave"),
        ("ship wreck", "shipwreck"),
        ("klimt", "the-kiss"),
        ("The Starry Night by van Gogh", "starry-night"),  # a title in a sentence
        ("make it look like starry night please", "starry-night"),
    ],
)
def test_a_name_people_type_finds_its_painting(typed: str, slug: str) -> None:
    assert find_preset(typed) == (slug, ())


@pytest.mark.parametrize(
    ("typed", "suggestions"),
    [
        ("van gogh", ("starry-night", "wheat-field-cypresses")),
        ("Van Gogh's", ("starry-night", "wheat-field-cypresses")),  # a possessive
        ("starry nigth", ("starry-night",)),  # a typo is offered, not painted
        ("picasso", ()),
        ("my cat with Tina Turner", ()),  # a painter's name in a sentence is not a request
        ("a kiss for mum", ()),
        ("the", ()),
    ],
)
def test_an_unclear_name_is_not_painted(typed: str, suggestions: tuple[str, ...]) -> None:
    assert find_preset(typed) == (None, suggestions)


def test_plain_drops_case_accents_possessives_and_punctuation() -> None:
    assert plain("  Léger's “Contrast”, 1913! ") == "leger contrast 1913"
