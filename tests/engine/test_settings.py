import pytest

from nst_core.settings import Quality, SettingsError, StyleSettings


def test_defaults_are_valid_and_round_trip_through_json_form():
    s = StyleSettings(strength=7, size=300, quality="best", preserve_colors=True, style_weights=(2, 1))
    assert s.quality is Quality.BEST
    assert StyleSettings.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 0}, "strength must be from 1 to 10"),
        ({"strength": 11}, "strength must be from 1 to 10"),
        ({"strength": 2.5}, "whole number"),
        ({"strength": True}, "whole number"),
        ({"size": 10}, "size must be from 64"),
        ({"size": 100_000}, "size must be from 64"),
        ({"quality": "ultra"}, "quality must be one of fast, balanced, best"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"style_weights": (0, 0)}, "not all zero"),
        ({"style_weights": (1, -1)}, "non-negative"),
        ({"style_scale": 10}, "style scale"),
        ({"tv_weight": -1}, "tv weight"),
        ({"tv_weight": float("nan")}, "tv weight must be a finite number"),  # the run "diverged" at the end
        ({"style_weights": (1, float("inf"))}, "style weights must be finite"),
        ({"style_scale": float("nan")}, "style scale"),
        ({"seed": -1}, "seed must be between 0 and"),
        ({"seed": 2**64}, "seed must be between 0 and"),
        ({"seed": "7"}, "seed must be a whole number"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_the_setting(changes, message):
    with pytest.raises(SettingsError, match=message):
        StyleSettings(**changes)


def test_blend_weights_are_normalised_and_must_match_the_styles():
    assert StyleSettings(style_weights=(3, 1)).blend_weights(2) == (0.75, 0.25)
    assert StyleSettings().blend_weights(4) == (0.25,) * 4
    with pytest.raises(SettingsError, match="2 style weights for 3"):
        StyleSettings(style_weights=(1, 1)).blend_weights(3)


def test_unknown_keys_from_storage_are_refused():
    with pytest.raises(SettingsError, match="unknown setting"):
        StyleSettings.from_dict({"strength": 5, "colour": "blue"})
