"""Arguments of ``rsvit zero-shot``, apart from its runner so that help and argument errors load no torch."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_zero_shot_arguments"]


def add_zero_shot_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit zero-shot``."""
    parser.add_argument(
        "images",
        type=Path,
        nargs="?",
        default=None,
        help="dataset folder to classify and score (one folder per class, or MillionAID tree); optional "
        "with --raster",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="CLIP weights (.pt/.bin/.safetensors)")
    parser.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="instead of --checkpoint: a classification model file (e.g. written by --save-model)",
    )
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
    parser.add_argument(
        "--classes",
        default=None,
        help="class folder names, comma-separated or a text file with one per line (for --raster without "
        "IMAGES or --support)",
    )
    parser.add_argument(
        "--save-model",
        type=Path,
        default=None,
        help="also write the classifier (zero-shot or few-shot) as an rsvit classification model file",
    )
    _add_few_shot_arguments(parser.add_argument_group("few-shot (k labelled images per class)"))
    _add_raster_arguments(parser.add_argument_group("raster (class map of a GeoTIFF, one class per tile)"))
    return parser


def _add_few_shot_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--shots", type=int, default=None, help="images per class drawn from --support")
    group.add_argument(
        "--support",
        type=Path,
        default=None,
        help="the labelled images: a folder with one folder per class, or an RSP split file",
    )
    group.add_argument(
        "--support-root",
        type=Path,
        default=None,
        help="folder the split file's image names are relative to (default: the split file's folder)",
    )
    group.add_argument(
        "--few-shot",
        choices=("cache", "probe"),
        default="cache",
        help="'cache': training-free cache adapter (Tip-Adapter); 'probe': logistic regression on the "
        "frozen image embeddings (default cache)",
    )
    group.add_argument("--seed", type=int, default=0, help="which shots are drawn (default 0)")
    group.add_argument("--alpha", type=float, default=1.0, help="cache adapter: weight of the cache")
    group.add_argument("--beta", type=float, default=1.0, help="cache adapter: sharpness of the affinity")
    group.add_argument(
        "--probe-weight-decay", type=float, default=1e-3, help="probe: L2 penalty towards its start"
    )
    group.add_argument(
        "--probe-init",
        choices=("text", "zero"),
        default="text",
        help="probe: start from (and stay near) the zero-shot classifier, or from zero",
    )


def _add_raster_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--raster", type=Path, default=None, help="GeoTIFF whose tiles to classify")
    group.add_argument(
        "--window", type=int, default=None, help="tile size in pixels (default: the model's input size)"
    )
    group.add_argument(
        "--overlap",
        type=int,
        default=0,
        help="overlap of neighbouring windows in pixels: 0 gives one class per tile, more a sliding "
        "window whose scores are blended (default 0)",
    )
    group.add_argument("--bands", default=None, help="1-based RGB bands of the raster, e.g. 1,2,3")
    group.add_argument(
        "--scores",
        choices=("uint8", "float16", "none"),
        default="uint8",
        help="per-class probabilities beside the class map (tiles_probabilities.tif; default uint8)",
    )
    group.add_argument("--resume", action="store_true", help="continue an interrupted raster run")
