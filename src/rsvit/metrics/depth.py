"""Old path of :mod:`rsvit.metrics.regression`; importing it warns and hands back that module."""

import sys
import warnings

from rsvit.metrics import regression

warnings.warn(
    "rsvit.metrics.depth moved to rsvit.metrics.regression; import from there",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = regression
