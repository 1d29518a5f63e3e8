"""nst_core: the style-transfer engine, free of Telegram.

The public surface: ``stylize`` and its ``StyleSettings``, the presets, and the
executor contract (``nst_core.executor``) that the bot and the workers share.

The algorithm's names load on first use: importing ``nst_core`` (as the bot does,
for presets, settings and image checks) must not load torch, so that a bot whose
jobs run on GPU workers stays a small process.
"""

from typing import Any

from nst_core.images import ImageError, open_image, save_image
from nst_core.presets import PresetError
from nst_core.settings import Quality, SettingsError, StyleSettings

_FROM_TRANSFER = ("Cancelled", "StylizeError", "StylizeProgress", "stylize")


def __getattr__(name: str) -> Any:
    if name in _FROM_TRANSFER:
        from nst_core import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module 'nst_core' has no attribute {name!r}")


__all__ = [
    "Cancelled",
    "ImageError",
    "PresetError",
    "Quality",
    "SettingsError",
    "StyleSettings",
    "StylizeError",
    "StylizeProgress",
    "open_image",
    "save_image",
    "stylize",
]
