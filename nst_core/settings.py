"""The one settings object every caller (CLI, bot, workers) hands to the engine.

Validation lives here, not in the callers, so a bad value gets the same clear
message whether it came from a command line, a chat command or a queue message.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MIN_SIZE = 64
#: The hard ceiling; the device's memory usually sets a lower one (see ``device.max_size``).
MAX_SIZE = 4096
MAX_SEED = 2**63 - 1


class SettingsError(ValueError):
    """A setting is out of range; the message is meant for the end user."""


class Quality(StrEnum):
    """How many optimisation steps to spend: the schedule, not the objective."""

    FAST = "fast"
    BALANCED = "balanced"
    BEST = "best"


class Optimizer(StrEnum):
    LBFGS = "lbfgs"
    ADAM = "adam"


@dataclass(frozen=True)
class StyleSettings:
    """What the user can choose about one stylization.

    ``size`` is the long side of the output in pixels; ``None`` means the
    device's default (see ``device.default_size``).  ``style_weights`` blends
    several style images; it is normalised, so ``(1, 1)`` and ``(2, 2)`` agree.
    ``seed`` 0 starts from the photo itself, so equal inputs give equal pictures;
    any other seed adds noise drawn from it to the start: one more variant each.
    """

    strength: int = 5
    size: int | None = None
    quality: Quality = Quality.BALANCED
    preserve_colors: bool = False
    style_weights: tuple[float, ...] | None = None
    style_scale: float = 1.0
    seed: int = 0
    optimizer: Optimizer = Optimizer.LBFGS
    tv_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "quality", Quality(self.quality))
        except ValueError:
            raise SettingsError(
                f"quality must be one of {', '.join(q.value for q in Quality)}, not {self.quality!r}"
            ) from None
        try:
            set_(self, "optimizer", Optimizer(self.optimizer))
        except ValueError:
            raise SettingsError(
                f"optimizer must be one of {', '.join(o.value for o in Optimizer)}, not {self.optimizer!r}"
            ) from None
        if isinstance(self.strength, bool) or not isinstance(self.strength, int):
            raise SettingsError(f"strength must be a whole number from 1 to 10, not {self.strength!r}")
        if not 1 <= self.strength <= 10:
            raise SettingsError(f"strength must be from 1 to 10, not {self.strength}")
        if self.size is not None:
            if isinstance(self.size, bool) or not isinstance(self.size, int):
                raise SettingsError(f"size must be a whole number of pixels, not {self.size!r}")
            if not MIN_SIZE <= self.size <= MAX_SIZE:
                raise SettingsError(f"size must be from {MIN_SIZE} to {MAX_SIZE} pixels, not {self.size}")
        if self.style_weights is not None:
            weights = tuple(float(w) for w in self.style_weights)
            if not weights or any(not 0 <= w < math.inf for w in weights) or sum(weights) <= 0:  # nan fails too
                raise SettingsError("style weights must be finite, non-negative and not all zero")
            set_(self, "style_weights", weights)
        if not 0.25 <= float(self.style_scale) <= 4.0:
            raise SettingsError(f"style scale must be from 0.25 to 4, not {self.style_scale}")
        set_(self, "style_scale", float(self.style_scale))
        if not 0 <= float(self.tv_weight) < math.inf:  # nan fails too
            raise SettingsError(f"tv weight must be a finite number, 0 or more, not {self.tv_weight}")
        set_(self, "tv_weight", float(self.tv_weight))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SettingsError(f"seed must be a whole number, not {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise SettingsError(f"seed must be between 0 and {MAX_SEED}")

    def blend_weights(self, n_styles: int) -> tuple[float, ...]:
        """Normalised blend weights for ``n_styles`` style images."""
        if self.style_weights is None:
            return tuple(1.0 / n_styles for _ in range(n_styles))
        if len(self.style_weights) != n_styles:
            raise SettingsError(f"got {len(self.style_weights)} style weights for {n_styles} style image(s)")
        total = sum(self.style_weights)
        return tuple(w / total for w in self.style_weights)

    def replace(self, **changes: Any) -> StyleSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for job rows and queue messages."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["quality"] = self.quality.value
        d["optimizer"] = self.optimizer.value
        if self.style_weights is not None:
            d["style_weights"] = list(self.style_weights)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StyleSettings:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = set(data) - known
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("style_weights") is not None:
            data["style_weights"] = tuple(data["style_weights"])
        return cls(**data)
