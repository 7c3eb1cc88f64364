"""Deprecated: ``rsvit fit|validate|test|predict`` (:mod:`rsvit.cli.lightning`) runs every task.

``build_segmentation_cli``, ``run_segmentation_cli`` and ``train_from_config``
delegate to it with ``SegmentationTask``.
"""

from __future__ import annotations

import sys
import warnings

from rsvit.cli.lightning import entry_points

__all__ = ["build_segmentation_cli", "main", "run_segmentation_cli", "train_from_config"]

warnings.warn(
    "rsvit.tasks.seg_runner is deprecated: use `rsvit fit --config` (rsvit.cli.lightning)",
    DeprecationWarning,
    stacklevel=2,
)

build_segmentation_cli, run_segmentation_cli, train_from_config, main = entry_points(
    "rsvit.tasks.segmentation:SegmentationTask"
)

if __name__ == "__main__":
    sys.exit(main())
