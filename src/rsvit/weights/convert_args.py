"""Arguments of ``rsvit convert``, declared without importing torch.

The runner is :func:`rsvit.weights.run_convert`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_convert_arguments"]


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit convert IN OUT``."""
    parser.add_argument("src", metavar="IN", help="official checkpoint (.pth/.pt/.ckpt/.safetensors)")
    parser.add_argument("dst", metavar="OUT", help="output .safetensors file (written atomically)")
    parser.add_argument(
        "--family",
        default=None,
        help="architecture family, e.g. vitaev2, resnet, swin, mmseg, bit, dpt, sam, orcn (default: guessed; "
        "an unknown name is reported with the full list)",
    )
    parser.add_argument(
        "--prefix", default=None, help="keep only entries under this prefix, e.g. 'backbone.'"
    )
    parser.add_argument("--key", default=None, help="wrapper entry to read, e.g. 'state_dict_ema'")
    parser.add_argument("--architecture", default=None, help="model name stored in the metadata")
    parser.add_argument("--input-size", default=None, help="C,H,W stored in the metadata")
    parser.add_argument("--mean", default=None, help="comma-separated per-band means")
    parser.add_argument("--std", default=None, help="comma-separated per-band standard deviations")
    parser.add_argument("--band-names", default=None, help="comma-separated band names")
    parser.add_argument("--classes", default=None, help="comma-separated class names")
    return parser
