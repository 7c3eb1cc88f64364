"""Deprecated: ``rsvit fit|validate|test|predict`` (:mod:`rsvit.cli.lightning`) runs every task.

``build_change_cli``, ``run_change_cli`` and ``train_from_config``
delegate to it with ``ChangeDetectionTask``.
"""

from __future__ import annotations

import sys
import warnings

from rsvit.cli.lightning import entry_points

__all__ = ["build_change_cli", "main", "run_change_cli", "train_from_config"]

warnings.warn(
    "rsvit.tasks.change_runner is deprecated: use `rsvit fit --config` (rsvit.cli.lightning)",
    DeprecationWarning,
    stacklevel=2,
)

build_change_cli, run_change_cli, train_from_config, main = entry_points(
    "rsvit.tasks.change:ChangeDetectionTask"
)

if __name__ == "__main__":
    sys.exit(main())
