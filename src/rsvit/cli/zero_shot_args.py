"""Arguments of ``rsvit zero-shot``, apart from its runner so that help and argument errors load no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_zero_shot_arguments"]


def add_zero_shot_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit zero-shot``."""
    parser.add_argument("images", type=Path, help="dataset folder (one folder per class, or MillionAID tree)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="CLIP weights (.pt/.bin/.safetensors)")
    parser.add_argument(
        "--model",
        default="auto",
        help="preset (e.g. remoteclip-vit-b-32, georsclip-vit-b-32, skyclip-vit-l-14), open_clip "
        "architecture (e.g. ViT-L-14-quickgelu), or 'auto' to recognise RN50/ViT-B-32/ViT-L-14/ViT-H-14 "
        "from the keys (GELU; OpenAI-initialised weights need a -quickgelu name or their preset)",
    )
    parser.add_argument("--model-config", type=Path, default=None, help="open_clip JSON config of the model")
    parser.add_argument("--split-file", type=Path, default=None, help="RSP label file listing the images")
    parser.add_argument(
        "--image-dir", default=".", help="folder of the split file's images, relative to IMAGES (default .)"
    )
    parser.add_argument("--layout", choices=("folders", "millionaid"), default="folders")
    parser.add_argument(
        "--dataset", default=None, help="dataset whose readable class names to use (default: recognised)"
    )
    parser.add_argument(
        "--templates",
        default=None,
        help="template set name or text file (default: the preset's, else rs-general)",
    )
    parser.add_argument(
        "--averaging",
        choices=("normalise-then-mean", "mean-then-normalise"),
        default=None,
        help="class-embedding rule (default: the preset's, else normalise-then-mean)",
    )
    parser.add_argument(
        "--logit-scale", default="fixed", help="'fixed' (100, as the papers), 'model', or a number"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=None, help="folder caching text classifiers")
    parser.add_argument("--limit-per-class", type=int, default=None, help="first N images of each class")
    return parser
