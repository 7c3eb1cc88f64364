"""The ``rsvit`` command: one entry point with a subcommand per job.

Subcommands import their dependencies lazily so that ``rsvit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
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
    from rsvit.tasks.cli import add_split_arguments, run_split

    parser = sub.add_parser(
        "split",
        help="write train/val split files for a published scene-recognition protocol",
        description="Deterministic, stratified, seeded splits (UCM 8:2, AID 2:8 / 5:5, NWPU 1:9 / 2:8) "
        "written as RSP label files, so a run can be reproduced from files alone.",
    )
    add_split_arguments(parser)
    return run_split


def _add_repeat(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.tasks.cli import add_repeat_arguments, run_repeat

    parser = sub.add_parser("repeat", help="fit one scene config with N seeds and tabulate mean ± std")
    add_repeat_arguments(parser)
    return run_repeat


def _add_export_backbone(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.tasks.cli import add_export_backbone_arguments, run_export_backbone

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


_SUBCOMMANDS = [
    _add_models,
    _add_demo,
    _add_convert,
    _add_predict_raster,
    _add_split,
    _add_repeat,
    _add_export_backbone,
    _add_benchmark,
]
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _config_files(argv: Sequence[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


# Lightning command line of each task: (module, function taking the argument list).
_TASK_CLIS = {
    "classification": ("rsvit.tasks.cli", "run_lightning_cli"),
    "segmentation": ("rsvit.tasks.seg_runner", "run_segmentation_cli"),
    "change": ("rsvit.tasks.change_runner", "run_change_cli"),
    "regression": ("rsvit.tasks.regression_runner", "run_regression_cli"),
}


def lightning_task_of(argv: Sequence[str]) -> str:
    """Which Lightning task a ``fit|validate|test|predict`` call is for, read from its config files.

    Task configs other than scene classification describe their network as ``model.model.task``
    (``segmentation``, ``change``, ``regression``); everything else is scene classification.
    ``--task NAME`` decides explicitly.
    """
    if "--task" in argv:
        i = list(argv).index("--task")
        if i + 1 >= len(argv) or argv[i + 1] not in _TASK_CLIS:
            raise ValueError(f"--task takes one of {', '.join(_TASK_CLIS)}")
        return argv[i + 1]
    import yaml

    for path in _config_files(argv):
        try:
            with open(path) as fh:
                config = yaml.safe_load(fh) or {}
        except OSError as err:
            raise FileNotFoundError(f"cannot read config {path}: {err}") from err
        inner = (config.get("model") or {}).get("model") if isinstance(config.get("model"), dict) else None
        if isinstance(inner, dict) and inner.get("task") in _TASK_CLIS:
            return str(inner["task"])
    return "classification"


def _run_lightning(argv: list[str]) -> int:
    task = lightning_task_of(argv)
    if "--task" in argv:
        i = argv.index("--task")
        argv = argv[:i] + argv[i + 2 :]
    module, function = _TASK_CLIS[task]
    return int(getattr(importlib.import_module(module), function)(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        # LightningCLI parses its own arguments (configs, dotted overrides, --help).
        try:
            return _run_lightning(argv)
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
        "(LightningCLI; classification, segmentation, change detection or height regression, "
        "read from the config)."
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


if __name__ == "__main__":
    sys.exit(main())
