"""Deprecated: ``rsvit fit|validate|test|predict`` (:mod:`rsvit.cli.lightning`) runs every task.

``build_regression_cli``, ``run_regression_cli`` and ``train_from_config``
delegate to it with ``DenseRegressionTask``.
"""

from __future__ import annotations

import sys
import warnings

from rsvit.cli.lightning import entry_points

__all__ = ["build_regression_cli", "main", "run_regression_cli", "train_from_config"]

warnings.warn(
    "rsvit.tasks.regression_runner is deprecated: use `rsvit fit --config` (rsvit.cli.lightning)",
    DeprecationWarning,
    stacklevel=2,
)

build_regression_cli, run_regression_cli, train_from_config, main = entry_points(
    "rsvit.tasks.regression:DenseRegressionTask"
)

if __name__ == "__main__":
    sys.exit(main())
