"""nst_core: the style-transfer engine, free of Telegram.

The public surface: ``stylize`` and its ``StyleSettings``, the presets, and the
executor contract (``nst_core.executor``) that the bot and the workers share.
"""

from nst_core.images import ImageError, open_image, save_image
from nst_core.presets import PresetError
from nst_core.settings import Quality, SettingsError, StyleSettings
from nst_core.transfer import Cancelled, StylizeError, StylizeProgress, stylize

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
