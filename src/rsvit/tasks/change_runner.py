"""Deprecated: ``rsvit fit|validate|test|predict`` (:mod:`rsvit.cli.lightning`) runs every task.

``build_change_cli`` and ``run_change_cli`` delegate to the one LightningCLI with
``ChangeDetectionTask``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_change_cli", "main", "run_change_cli", "train_from_config"]

warnings.warn(
    "rsvit.tasks.change_runner is deprecated: use `rsvit fit --config` (rsvit.cli.lightning)",
    DeprecationWarning,
    stacklevel=2,
)


def _task() -> type:
    from rsvit.tasks.change import ChangeDetectionTask

    return ChangeDetectionTask


def build_change_cli(args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
    """The one LightningCLI with ``ChangeDetectionTask``."""
    from rsvit.cli.lightning import build_cli

    return build_cli(args, run=run, task=_task(), **kwargs)


def run_change_cli(args: list[str]) -> int:
    """``fit|validate|test|predict --config ...``; returns the exit status."""
    from rsvit.cli.lightning import run_lightning

    return run_lightning(args, task=_task())


def train_from_config(config_path: str | Path, overrides: list[str] | None = None) -> Path:
    """:func:`rsvit.cli.lightning.train_from_config` with ``ChangeDetectionTask``."""
    from rsvit.cli.lightning import train_from_config as train

    return train(config_path, overrides, task=_task())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rsvit.tasks.change_runner fit --config ...``."""
    return run_change_cli(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
