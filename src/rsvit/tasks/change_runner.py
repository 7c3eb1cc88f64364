"""Command line of the change-detection task: LightningCLI with the data linked into the model.

* ``run_change_cli(["fit", "--config", "configs/change/levir_quick.yaml"])`` (also ``validate``,
  ``test`` and ``predict``): the data's classes, normalisation, ignore index and band count are linked
  into the task; every run gets ``metrics.json``, validation PNGs and, after fit, ``model.safetensors``
  in its run folder (:class:`~rsvit.tasks.change.ChangeReport`), and ``predictions/`` when predicting
  (:class:`~rsvit.tasks.change_predict.ChangePredictionWriter`).
* :func:`train_from_config`: fit from a YAML file (plus overrides) and return the run folder.

``python -m rsvit.tasks.change_runner <fit|validate|test|predict> --config ...`` runs it without the ``rsvit``
entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsvit.tasks.runner import LIGHTNING_SUBCOMMANDS, fit_config, instantiate_cli, run_cli

__all__ = ["build_change_cli", "main", "run_change_cli", "train_from_config"]


def _cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    from rsvit.datamodules.change import ChangeDataModule
    from rsvit.tasks.change import ChangeDetectionTask, ChangeReport
    from rsvit.tasks.change_predict import ChangePredictionWriter

    class _ChangeCLI(LightningCLI):
        """LightningCLI with the data linked into the task and the report callback always on."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(ChangeDetectionTask, ChangeDataModule, *args, **kwargs)

        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
            parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")
            parser.link_arguments("data.ignore_index", "model.ignore_index")
            parser.link_arguments("data.in_chans", "model.in_chans")
            parser.link_arguments("data.mean", "model.mean")
            parser.link_arguments("data.std", "model.std")
            parser.add_lightning_class_args(ChangeReport, "report")
            parser.add_lightning_class_args(ChangePredictionWriter, "prediction_writer")

    return _ChangeCLI


def __getattr__(name: str) -> Any:
    if name == "ChangeCLI":  # built lazily: importing Lightning costs seconds
        return _cli_class()
    raise AttributeError(name)


def build_change_cli(args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
    """Parses ``args`` with the change-detection LightningCLI; ``run=False`` only instantiates."""
    return instantiate_cli(_cli_class(), args, run, **kwargs)


def run_change_cli(args: list[str]) -> int:
    """``fit|validate|test|predict --config ...``. Returns the exit status."""
    return run_cli(build_change_cli, args, LIGHTNING_SUBCOMMANDS)


def train_from_config(config_path: str | Path, overrides: list[str] | None = None) -> Path:
    """Fits the run a change-detection YAML config describes and returns its run folder.

    ``overrides`` are further LightningCLI arguments (``["--trainer.max_steps=20"]``). The folder holds
    ``config.yaml``, ``metrics.json``, ``val_predictions/`` and ``model.safetensors``
    (load it with :func:`rsvit.models.load_model`).
    """
    from rsvit.tasks.change import ChangeReport

    return fit_config(build_change_cli, config_path, overrides, ChangeReport)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rsvit.tasks.change_runner fit --config ...``."""
    return run_change_cli(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
