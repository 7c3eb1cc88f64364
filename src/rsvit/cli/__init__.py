"""The ``rsvit`` command: one entry point with a subcommand per job.

``fit``, ``validate``, ``test`` and ``predict`` go to the one LightningCLI (:mod:`rsvit.cli.lightning`),
which builds the task class the config names; the other subcommands are argparse commands. Subcommands
import their dependencies lazily so that ``rsvit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from rsvit.models.catalogue import backbone_table, format_table

    print(format_table(backbone_table()))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    sub.add_parser("models", help="list the configured backbones with parameter counts")
    return _cmd_models


def _add_convert(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.weights import add_convert_arguments, run_convert

    parser = sub.add_parser(
        "convert",
        help="convert an official checkpoint to rsvit safetensors",
        description="Read any supported checkpoint safely, convert its keys to rsvit's layout and write "
        "a safetensors file with metadata (written atomically).",
    )
    add_convert_arguments(parser)
    return run_convert


def _add_demo(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.demo import add_demo_arguments, run_demo

    parser = sub.add_parser(
        "demo",
        help="quick start: list backbones and run one on a sample image",
        description="Lists the backbones, runs one on a real multispectral sample (or your image) and "
        "writes a picture of its feature pyramid.",
    )
    add_demo_arguments(parser)
    return run_demo


def _add_predict_raster(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.inference.cli import add_predict_raster_arguments, run_predict_raster

    parser = sub.add_parser(
        "predict-raster",
        help="run a dense model over a whole GeoTIFF: class map, probabilities, polygons",
        description="Stream any size of raster through a trained model in windows with seamless blending; "
        "write a georeferenced Cloud-Optimized GeoTIFF (and optionally probabilities and GeoJSON).",
    )
    add_predict_raster_arguments(parser)
    return run_predict_raster


def _add_split(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.data.classification.splits import add_split_arguments, run_split

    parser = sub.add_parser(
        "split",
        help="write train/val split files for a published scene-recognition protocol",
        description="Deterministic, stratified, seeded splits (UCM 8:2, AID 2:8 / 5:5, NWPU 1:9 / 2:8) "
        "written as RSP label files, so a run can be reproduced from files alone.",
    )
    add_split_arguments(parser)
    return run_split


def _add_repeat(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.repeat import add_repeat_arguments, run_repeat

    parser = sub.add_parser("repeat", help="fit one scene config with N seeds and tabulate mean ± std")
    add_repeat_arguments(parser)
    return run_repeat


def _add_export_backbone(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.export_backbone import add_export_backbone_arguments, run_export_backbone

    parser = sub.add_parser(
        "export-backbone", help="write a trained run's backbone to safetensors with its preprocessing"
    )
    add_export_backbone_arguments(parser)
    return run_export_backbone


def _add_benchmark(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.benchmark import add_benchmark_arguments, run_benchmark

    parser = sub.add_parser(
        "benchmark",
        help="images per second of backbones on this machine, fp32 and bf16, inference and training",
        description="Times the models as rsvit builds them in interleaved rounds and reports img/s and "
        "the median per-round ratio to a baseline measured in the same run.",
    )
    add_benchmark_arguments(parser)
    return run_benchmark


def _add_zero_shot(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.zero_shot import add_zero_shot_arguments, run_zero_shot

    parser = sub.add_parser(
        "zero-shot",
        help="classify scene images with a CLIP checkpoint and text prompts, no training",
        description="Builds a text classifier from readable class names and a template set, classifies a "
        "class-folder tree, MillionAID tree or split file, and writes predictions.csv, metrics.json and "
        "confusion.png.",
    )
    add_zero_shot_arguments(parser)
    return run_zero_shot


def _add_export(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.export import add_export_arguments, run_export

    parser = sub.add_parser(
        "export",
        help="export a model file to ONNX or a torch.export program, with rsvit's metadata",
        description="Exports classification, segmentation, change and height models for deployment, checks "
        "the export against eager PyTorch and optionally writes an int8 ONNX copy.",
    )
    add_export_arguments(parser)
    return run_export


def _add_segment_raster(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.segment_raster import add_segment_raster_arguments, run_segment_raster

    parser = sub.add_parser(
        "segment-raster",
        help="segment what prompts (points, boxes, scribbles from GeoJSON) point at on a GeoTIFF with SAM",
        description="Answers each prompt from a window around it (embeddings cached per window) and writes "
        "one georeferenced mask GeoTIFF and polygons with scores and prompt ids.",
    )
    add_segment_raster_arguments(parser)
    return run_segment_raster


def _add_masks_raster(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.cli.segment_raster import add_masks_raster_arguments, run_masks_raster

    parser = sub.add_parser(
        "masks-raster",
        help="automatic SAM masks over a whole GeoTIFF: instance-id GeoTIFF and polygons",
        description="Runs the automatic mask generator window by window, removes duplicates across window "
        "overlaps and writes an instance-id GeoTIFF and polygons with scores and areas in map units.",
    )
    add_masks_raster_arguments(parser)
    return run_masks_raster


_SUBCOMMANDS = [
    _add_models,
    _add_demo,
    _add_convert,
    _add_predict_raster,
    _add_split,
    _add_repeat,
    _add_export_backbone,
    _add_benchmark,
    _add_zero_shot,
    _add_export,
    _add_segment_raster,
    _add_masks_raster,
]
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: Sequence[str] | None = None) -> int:
    """``rsvit COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        # LightningCLI parses its own arguments (configs, dotted overrides, --help).
        from rsvit.cli.lightning import run_lightning

        try:
            return run_lightning(argv)
        except (ValueError, FileNotFoundError) as err:
            print(f"rsvit {argv[0]}: error: {err}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(
        prog="rsvit",
        description="Remote Sensing Vision Transformers: backbones, tasks, large-scene inference.",
    )
    from rsvit import __version__

    parser.add_argument("--version", action="version", version=f"rsvit {__version__}")
    parser.epilog = (
        "Training: rsvit fit|validate|test|predict --config CONFIG.yaml [--trainer.max_epochs=N ...] "
        "(LightningCLI; the config names its task, e.g. model.class_path: rsvit.tasks.SegmentationTask)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for add in _SUBCOMMANDS:
        handler = add(sub)
        handlers[list(sub.choices)[-1]] = handler
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(handlers[args.command](args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"rsvit {args.command}: error: {err}", file=sys.stderr)
        return 1
