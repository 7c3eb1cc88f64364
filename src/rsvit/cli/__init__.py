"""The ``rsvit`` command: one entry point with a subcommand per job.

``fit``, ``validate``, ``test`` and ``predict`` go to the one LightningCLI (:mod:`rsvit.cli.lightning`),
which builds the task class the config names; the other subcommands are argparse commands.

Each command is a :class:`Command`: its help text, a light function that declares its arguments and a
runner named by import path. ``rsvit --help`` declares no arguments at all, and ``rsvit CMD ...`` imports
only ``CMD``'s argument module until the arguments parse, so help and argument errors answer without
loading torch. Errors are reported as one line with exit status 1 (:mod:`rsvit.cli.errors`); ``--debug``
or ``RSVIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from rsvit.cli.demo_args import DEMO_DESCRIPTION, DEMO_HELP
from rsvit.cli.errors import debug_requested, is_user_error, one_line

__all__ = ["COMMANDS", "Command", "main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
DISTILL_COMMAND = "distill"  # ``fit`` for a config whose task is a distillation task
DEBUG_FLAG = "--debug"


@dataclass(frozen=True)
class Command:
    """One ``rsvit`` subcommand: ``arguments`` and ``runner`` are ``"module:function"`` paths."""

    name: str
    help: str
    arguments: str | None
    runner: str
    description: str | None = None

    def add_to(self, sub: argparse._SubParsersAction, with_arguments: bool) -> argparse.ArgumentParser:
        parser = sub.add_parser(self.name, help=self.help, description=self.description or self.help)
        if with_arguments and self.arguments:
            _resolve(self.arguments)(parser)
        return parser


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def _cmd_models(args: argparse.Namespace) -> int:
    from rsvit.models.catalogue import backbone_table, format_table

    print(format_table(backbone_table()))
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("models", "list the configured backbones with parameter counts", None, "rsvit.cli:_cmd_models"),
    Command(
        "demo",
        DEMO_HELP,
        "rsvit.cli.demo_args:add_demo_arguments",
        "rsvit.demo:run_demo",
        DEMO_DESCRIPTION,
    ),
    Command(
        "convert",
        "convert an official checkpoint to rsvit safetensors",
        "rsvit.weights.convert_args:add_convert_arguments",
        "rsvit.weights:run_convert",
        "Read any supported checkpoint safely, convert its keys to rsvit's layout and write a safetensors "
        "file with metadata (written atomically).",
    ),
    Command(
        "predict-raster",
        "run a dense model over a whole GeoTIFF: class map, probabilities, polygons",
        "rsvit.inference.cli:add_predict_raster_arguments",
        "rsvit.inference.cli:run_predict_raster",
        "Stream any size of raster through a trained model in windows with seamless blending; write a "
        "georeferenced Cloud-Optimized GeoTIFF (and optionally probabilities and GeoJSON).",
    ),
    Command(
        "split",
        "write train/val split files for a published scene-recognition protocol",
        "rsvit.data.classification.splits:add_split_arguments",
        "rsvit.data.classification.splits:run_split",
        "Deterministic, stratified, seeded splits (UCM 8:2, AID 2:8 / 5:5, NWPU 1:9 / 2:8) written as RSP "
        "label files, so a run can be reproduced from files alone.",
    ),
    Command(
        "repeat",
        "fit one config with N seeds and tabulate mean ± std of its headline metric",
        "rsvit.cli.repeat:add_repeat_arguments",
        "rsvit.cli.repeat:run_repeat",
    ),
    Command(
        "export-backbone",
        "write a trained run's backbone to safetensors with its preprocessing",
        "rsvit.cli.export_backbone:add_export_backbone_arguments",
        "rsvit.cli.export_backbone:run_export_backbone",
        "Reads a run folder (its checkpoints/*.ckpt, else the model.safetensors every run exports) or a "
        "file, and writes the backbone with its input size, mean/std, bands and classes.",
    ),
    Command(
        "benchmark",
        "images per second of backbones on this machine, fp32 and bf16, inference and training",
        "rsvit.cli.benchmark_args:add_benchmark_arguments",
        "rsvit.benchmark:run_benchmark",
        "Times the models as rsvit builds them in interleaved rounds and reports img/s and the median "
        "per-round ratio to a baseline measured in the same run.",
    ),
    Command(
        "zero-shot",
        "classify scene images with a CLIP checkpoint and text prompts, no training",
        "rsvit.cli.zero_shot_args:add_zero_shot_arguments",
        "rsvit.cli.zero_shot:run_zero_shot",
        "Builds a text classifier from readable class names and a template set, classifies a class-folder "
        "tree, MillionAID tree or split file, and writes predictions.csv, metrics.json and confusion.png.",
    ),
    Command(
        "export",
        "export a model file to ONNX or a torch.export program, with rsvit's metadata",
        "rsvit.cli.export:add_export_arguments",
        "rsvit.cli.export:run_export",
        "Exports classification, segmentation, change and height models for deployment, checks the export "
        "against eager PyTorch and optionally writes an int8 ONNX copy.",
    ),
    Command(
        "segment-raster",
        "segment what prompts (points, boxes, scribbles from GeoJSON) point at on a GeoTIFF with SAM",
        "rsvit.cli.segment_raster:add_segment_raster_arguments",
        "rsvit.cli.segment_raster:run_segment_raster",
        "Answers each prompt from a window around it (embeddings cached per window) and writes one "
        "georeferenced mask GeoTIFF and polygons with scores and prompt ids.",
    ),
    Command(
        "masks-raster",
        "automatic SAM masks over a whole GeoTIFF: instance-id GeoTIFF and polygons",
        "rsvit.cli.segment_raster:add_masks_raster_arguments",
        "rsvit.cli.segment_raster:run_masks_raster",
        "Runs the automatic mask generator window by window, removes duplicates across window overlaps "
        "and writes an instance-id GeoTIFF and polygons with scores and areas in map units.",
    ),
)


def _parser(selected: str | None) -> argparse.ArgumentParser:
    """The argument parser; only the ``selected`` command's arguments are declared (imported)."""
    from rsvit import __version__

    parser = argparse.ArgumentParser(
        prog="rsvit",
        description="Remote Sensing Vision Transformers: backbones, tasks, large-scene inference.",
        epilog="Training: rsvit fit|validate|test|predict --config CONFIG.yaml [--trainer.max_epochs=N ...] "
        "(rsvit distill --config CONFIG.yaml for distillation configs) "
        "(LightningCLI; the config names its task, e.g. model.class_path: rsvit.tasks.SegmentationTask). "
        f"{DEBUG_FLAG} (or RSVIT_DEBUG=1) shows tracebacks of errors.",
    )
    parser.add_argument("--version", action="version", version=f"rsvit {__version__}")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(sub, with_arguments=command.name == selected)
    return parser


def _distill_as_fit(argv: list[str]) -> list[str]:
    """``rsvit distill --config C`` = ``rsvit fit --config C`` for distillation configs only."""
    fit = ["fit", *argv[1:]]
    if any(a in ("-h", "--help") for a in fit):
        return fit
    from rsvit.cli.lightning import task_class_of
    from rsvit.tasks.distillation import DistillationTask
    from rsvit.tasks.distillation_encoder import PromptableEncoderDistillationTask

    task = task_class_of(fit)
    if not issubclass(task, (DistillationTask, PromptableEncoderDistillationTask)):
        raise ValueError(
            f"rsvit distill takes a distillation config (model.class_path: "
            f"rsvit.tasks.ClassificationDistillationTask, ...); {task.__name__} trains with rsvit fit"
        )
    return fit


def _report(command: str, err: BaseException, debug: bool) -> int:
    if debug or not is_user_error(err):
        raise err
    print(f"rsvit {command}: error: {one_line(err)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``rsvit COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or debug_requested()
    argv = [a for a in argv if a != DEBUG_FLAG]
    if argv and argv[0] in (*LIGHTNING_COMMANDS, DISTILL_COMMAND):
        # LightningCLI parses its own arguments (configs, dotted overrides, --help).
        from rsvit.cli.lightning import run_lightning

        try:
            if argv[0] == DISTILL_COMMAND:
                return run_lightning(_distill_as_fit(argv))
            return run_lightning(argv)
        except Exception as err:  # one line for user errors, the traceback for bugs
            return _report(argv[0], err, debug)
    names = {c.name: c for c in COMMANDS}
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = _parser(selected if selected in names else None).parse_args(argv)
    if args.command is None:
        _parser(None).print_help()
        return 2
    try:
        return int(_resolve(names[args.command].runner)(args) or 0)
    except Exception as err:  # one line for user errors, the traceback for bugs
        return _report(args.command, err, debug)
