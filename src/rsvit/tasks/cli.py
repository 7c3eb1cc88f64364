"""Command-line jobs of the scene tasks: LightningCLI subcommands, splits, repeated runs, export.

* ``run_lightning_cli(["fit", "--config", "configs/scene/rsscn7_quick.yaml"])`` -- also
  ``validate``, ``test`` and ``predict``; the data's class list, band count and batch size are linked
  into the model, and every run gets ``metrics.json`` (+ confusion matrices) and, when predicting, a
  ``predictions.csv`` in its run folder.
* ``add_split_arguments`` / ``run_split``: ``rsvit split ROOT --protocol aid_28 --seed 0``.
* ``add_repeat_arguments`` / ``run_repeat``: ``rsvit repeat --config ... --seeds 5``, N seeds and a
  mean ± std table.
* ``add_export_backbone_arguments`` / ``run_export_backbone``: ``rsvit export-backbone RUN OUT``.

``python -m rsvit.tasks.cli <fit|validate|test|predict|split|repeat|export-backbone> ...`` runs any of
them without the ``rsvit`` entry point (and is what DDP worker processes re-execute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsvit.data.splits import add_split_arguments, run_split
from rsvit.tasks.runner import LIGHTNING_SUBCOMMANDS, instantiate_cli, run_cli

__all__ = [
    "add_export_backbone_arguments",
    "add_repeat_arguments",
    "add_split_arguments",
    "build_cli",
    "export_backbone",
    "main",
    "run_export_backbone",
    "run_lightning_cli",
    "run_repeat",
    "run_split",
]


def _cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    from rsvit.datamodules.scene import SceneDataModule
    from rsvit.tasks.callbacks import MetricsReport, PredictionWriter
    from rsvit.tasks.classification import ClassificationTask

    class _SceneCLI(LightningCLI):
        """LightningCLI with the data linked into the model and the report callbacks always on."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(ClassificationTask, SceneDataModule, *args, **kwargs)

        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
            parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")
            parser.link_arguments("data.in_chans", "model.in_chans")
            parser.link_arguments("data.batch_size", "model.batch_size")
            parser.add_lightning_class_args(MetricsReport, "report")
            parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    return _SceneCLI


def build_cli(args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
    """Parses ``args`` with the scene LightningCLI. ``run=False`` only instantiates (no subcommand)."""
    return instantiate_cli(_cli_class(), args, run, **kwargs)


def run_lightning_cli(args: list[str]) -> int:
    """``fit|validate|test|predict --config ...`` (LightningCLI). Returns the exit status."""
    return run_cli(build_cli, args, LIGHTNING_SUBCOMMANDS)


# ---------------------------------------------------------------------------------------------
# rsvit repeat
# ---------------------------------------------------------------------------------------------


def add_repeat_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit repeat``."""
    parser.add_argument("--config", required=True, action="append", help="LightningCLI config (repeatable)")
    parser.add_argument("--seeds", type=int, default=5, help="number of runs (default 5)")
    parser.add_argument("--first-seed", type=int, default=2022, help="seed of the first run (RSP: 2022)")
    parser.add_argument("--out", type=Path, default=None, help="folder for repeat.json / repeat.md")
    parser.add_argument(
        "overrides", nargs="*", help="further LightningCLI arguments, e.g. --trainer.max_epochs=5"
    )
    return parser


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    # Population standard deviation (numpy's default), as RSP's script reports it.
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def repeat_runs(
    configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str] = (), out: Path | None = None
) -> dict[str, Any]:
    """Fits one run per seed (fresh model, weights and optimiser each time) and tabulates top-1.

    RSP repeats on the same split file, so only the training seed changes. Reported per run: the
    last-epoch and the best-epoch validation top-1 (RSP logs both).
    """
    from rsvit.tasks.callbacks import MetricsReport, run_dir, write_json, write_text

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        args = [a for c in configs for a in ("--config", str(c))] + [f"--seed_everything={seed}", *overrides]
        cli = build_cli(args, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        report = next(cb for cb in cli.trainer.callbacks if isinstance(cb, MetricsReport))
        last = report.last.get("val") or {}
        best = report.best or {}
        rows.append(
            {
                "seed": seed,
                "run": str(run_dir(cli.trainer)),
                "last_acc1": 100 * float(last.get("acc1", float("nan"))),
                "best_acc1": 100 * float(best.get("acc1", float("nan"))),
                "best_epoch": best.get("epoch"),
            }
        )
        if out is None:
            out = run_dir(cli.trainer).parent
    summary = {
        name: dict(zip(("mean", "std"), _mean_std([r[name] for r in rows]), strict=True))
        for name in ("last_acc1", "best_acc1")
    }
    result = {
        "configs": list(map(str, configs)),
        "overrides": list(overrides),
        "runs": rows,
        "summary": summary,
    }
    assert out is not None
    lines = ["| seed | last top-1 (%) | best top-1 (%) | best epoch | run |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['seed']} | {r['last_acc1']:.2f} | {r['best_acc1']:.2f} | {r['best_epoch']} | {r['run']} |"
        for r in rows
    ]
    lines.append(
        f"| mean ± std | {summary['last_acc1']['mean']:.2f} ± {summary['last_acc1']['std']:.2f} | "
        f"{summary['best_acc1']['mean']:.2f} ± {summary['best_acc1']['std']:.2f} | | |"
    )
    table = "\n".join(lines) + "\n"
    write_json(Path(out) / "repeat.json", result)
    write_text(Path(out) / "repeat.md", table)
    result["table"] = table
    result["out"] = str(out)
    return result


def run_repeat(args: argparse.Namespace) -> int:
    """Runs ``--seeds`` fits and prints the mean ± std table."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = [args.first_seed + i for i in range(args.seeds)]
    result = repeat_runs(args.config, seeds, args.overrides, args.out)
    print(result["table"], end="")
    print(f"written to {result['out']}/repeat.json and repeat.md")
    return 0


# ---------------------------------------------------------------------------------------------
# rsvit export-backbone
# ---------------------------------------------------------------------------------------------


def _find_checkpoint(run: Path) -> Path:
    """``run`` itself when it is a file; else the run folder's ``checkpoints/last.ckpt`` or newest."""
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"run folder or checkpoint not found: {run}")
    folder = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no checkpoint (*.ckpt) in {folder}")
    return found[-1]


def export_backbone(run: str | Path, out: str | Path, with_head: bool = False) -> Path:
    """Writes the network of a trained run (without its classifier unless ``with_head``) as safetensors.

    The metadata carries the architecture, input size, mean/std, bands and the classes the network was
    trained on, so ``rsvit.weights.load`` / ``read_metadata`` give everything needed to use it.
    """
    import torch

    from rsvit.models.classifier import build_classifier, classifier_keys
    from rsvit.weights import WeightsMetadata, infer_family, save

    ckpt_path = _find_checkpoint(Path(run))
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    info = checkpoint.get("rsvit")
    if not isinstance(info, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt_path} is not a checkpoint of an rsvit ClassificationTask run")
    model = build_classifier(info["backbone"], info["num_classes"], info["in_chans"])
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    head = set(classifier_keys(model))
    weights = {k: v for k, v in model.state_dict().items() if with_head or k not in head}
    prep = info.get("preprocessing") or {}
    bands = prep.get("bands")
    metadata = WeightsMetadata(
        architecture=info["backbone"],
        input_size=tuple(prep["input_size"]) if prep.get("input_size") else None,
        mean=tuple(prep["mean"]) if prep.get("mean") else None,
        std=tuple(prep["std"]) if prep.get("std") else None,
        band_names=tuple(f"band_{b}" for b in bands) if bands else None,
        classes=tuple(info["classes"]),
        extra={
            "source_checkpoint": str(ckpt_path),
            "epoch": int(checkpoint.get("epoch", -1)),
            "global_step": int(checkpoint.get("global_step", -1)),
            "with_head": with_head,
            "interpolation": prep.get("interpolation"),
            "crop_pct": prep.get("crop_pct"),
        },
    )
    return save(out, weights, metadata, family=infer_family(model))


def add_export_backbone_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit export-backbone``."""
    parser.add_argument("run", type=Path, help="run folder (uses checkpoints/last.ckpt) or a .ckpt file")
    parser.add_argument("out", type=Path, help="output .safetensors file (written atomically)")
    parser.add_argument("--with-head", action="store_true", help="keep the classifier as well")
    return parser


def run_export_backbone(args: argparse.Namespace) -> int:
    """Exports and prints what was written."""
    from rsvit.weights import read_metadata

    path = export_backbone(args.run, args.out, with_head=args.with_head)
    meta = read_metadata(path)
    print(
        f"wrote {path}: {meta.architecture}, input {meta.input_size}, "
        f"{len(meta.classes or ())} training classes"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# python -m rsvit.tasks.cli
# ---------------------------------------------------------------------------------------------

_ARGPARSE_COMMANDS = {
    "split": (add_split_arguments, run_split, "write stratified, seeded split files"),
    "repeat": (add_repeat_arguments, run_repeat, "fit N seeds and tabulate mean ± std"),
    "export-backbone": (add_export_backbone_arguments, run_export_backbone, "export a run's backbone"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatches to LightningCLI or to the argparse commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        return run_lightning_cli(argv)
    parser = argparse.ArgumentParser(prog="python -m rsvit.tasks.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (--config ...)", add_help=False)
    for name, (add, _, help_text) in _ARGPARSE_COMMANDS.items():
        add(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_ARGPARSE_COMMANDS[args.command][1](args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"{args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
