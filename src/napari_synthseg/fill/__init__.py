"""Healthy-tissue fill: replace masked pixels by plausible healthy tissue.

Use :func:`get_filler` (``"biharmonic"``, ``"telea"``; learned models register more) and
:meth:`Filler.fill`. See :mod:`.base` for the interface a new method implements.
"""

from . import classical  # noqa: F401  (registers the classical fillers)
from .base import Filler, available_fillers, get_filler, register_filler
from .classical import BiharmonicFiller, TeleaFiller

__all__ = [
    "Filler",
    "BiharmonicFiller",
    "TeleaFiller",
    "available_fillers",
    "get_filler",
    "register_filler",
]
