"""Deprecated: the scene-classification DataModule lives in :mod:`rsvit.datamodules.classification`."""

from __future__ import annotations

import warnings

from rsvit.datamodules.classification import *  # noqa: F403
from rsvit.datamodules.classification import __all__  # noqa: F401

warnings.warn(
    "rsvit.datamodules.scene moved to rsvit.datamodules.classification", DeprecationWarning, stacklevel=2
)
