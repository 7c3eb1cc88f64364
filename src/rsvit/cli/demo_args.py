"""Arguments of ``rsvit demo``, apart from its runner so that help and argument errors load no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DEMO_DESCRIPTION", "DEMO_HELP", "add_demo_arguments"]

DEMO_HELP = "quick start: train a small land-cover model and map an in-domain and an out-of-domain scene"
DEMO_DESCRIPTION = (
    "Draws one backbone's feature pyramid on a real scene, trains a small UperNet on the bundled Dubai "
    "tiles (CC0), maps a held-out Dubai tile (in domain; its mIoU against the true labels is reported) and "
    "the bundled NAIP scene (out of domain) with the large-scene engine, and prints the next commands. "
    "--image (with --bands) maps your own raster instead of the NAIP scene."
)


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit demo``."""
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="your image or GeoTIFF: drawn through the backbone and mapped by the trained model "
        "(default: the bundled NAIP scene)",
    )
    parser.add_argument("--bands", type=str, default=None, help="1-based bands of --image, e.g. 1,2,3")
    parser.add_argument("--backbone", default="vitaev2_s", help="backbone of the feature picture")
    parser.add_argument(
        "--weights", type=Path, default=None, help="checkpoint of that backbone (any supported format)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--no-table", action="store_true", help="skip the backbone table")
    parser.add_argument(
        "--backbone-only", action="store_true", help="stop after the feature pyramid (no training)"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    return parser
