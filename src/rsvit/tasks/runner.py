"""Deprecated: the task command lines are one LightningCLI now (:mod:`rsvit.cli.lightning`)."""

from __future__ import annotations

import warnings

from rsvit.cli.lightning import LIGHTNING_COMMANDS as LIGHTNING_SUBCOMMANDS
from rsvit.cli.lightning import train_from_config

__all__ = ["LIGHTNING_SUBCOMMANDS", "train_from_config"]

warnings.warn("rsvit.tasks.runner is deprecated: use rsvit.cli.lightning", DeprecationWarning, stacklevel=2)
