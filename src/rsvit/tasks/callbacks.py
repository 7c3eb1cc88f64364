"""Deprecated: import from :mod:`rsvit.tasks.reports` and :mod:`rsvit.tasks.writers`.

The run reports are in :mod:`rsvit.tasks.reports`, the prediction writers in :mod:`rsvit.tasks.writers`.
"""

from __future__ import annotations

import warnings

from rsvit.tasks.reports import (
    MetricsReport,
    RunReport,
    plot_confusion_matrix,
    run_dir,
    write_json,
    write_text,
)
from rsvit.tasks.writers import FolderPredictionWriter, PredictionWriter, safe_stem

__all__ = [
    "FolderPredictionWriter",
    "MetricsReport",
    "PredictionWriter",
    "RunReport",
    "plot_confusion_matrix",
    "run_dir",
    "safe_stem",
    "write_json",
    "write_text",
]

warnings.warn(
    "rsvit.tasks.callbacks is split into rsvit.tasks.reports and rsvit.tasks.writers",
    DeprecationWarning,
    stacklevel=2,
)
