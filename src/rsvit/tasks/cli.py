"""Deprecated: the scene command lines moved to :mod:`rsvit.cli` (``rsvit fit|repeat|export-backbone``).

``build_cli`` / ``run_lightning_cli`` delegate to the one LightningCLI (:mod:`rsvit.cli.lightning`) with
:class:`~rsvit.tasks.ClassificationTask`; ``python -m rsvit.tasks.cli`` still runs.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from rsvit.cli.export_backbone import add_export_backbone_arguments, export_backbone, run_export_backbone
from rsvit.cli.lightning import entry_points
from rsvit.cli.repeat import add_repeat_arguments, repeat_runs, run_repeat
from rsvit.data.splits import add_split_arguments, run_split

__all__ = [
    "add_export_backbone_arguments",
    "add_repeat_arguments",
    "add_split_arguments",
    "build_cli",
    "export_backbone",
    "main",
    "repeat_runs",
    "run_export_backbone",
    "run_lightning_cli",
    "run_repeat",
    "run_split",
]

warnings.warn(
    "rsvit.tasks.cli is deprecated: use rsvit.cli (rsvit.cli.lightning.build_cli / run_lightning, "
    "rsvit.cli.repeat, rsvit.cli.export_backbone)",
    DeprecationWarning,
    stacklevel=2,
)


build_cli, run_lightning_cli, _, _ = entry_points("rsvit.tasks.classification:ClassificationTask")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rsvit.tasks.cli ...``: the ``rsvit`` command."""
    from rsvit.cli import main as rsvit_main

    return rsvit_main(argv)


if __name__ == "__main__":
    sys.exit(main())
