"""Command line of the height / depth regression task: LightningCLI with the data linked into the model.

* ``run_regression_cli(["fit", "--config", "configs/regression/height_quick.yaml"])`` (also
  ``validate``, ``test``, ``predict``): the data's band count and pixel size are linked into the task;
  every run gets ``metrics.json``, preview PNGs and, after fit, ``model.safetensors`` in its run folder
  (:class:`~rsvit.tasks.regression.HeightReport`); ``predict`` writes ``predictions/<name>.tif`` (float32
  heights on the image's grid, NaN nodata) and ``<name>.png`` per image
  (:class:`~rsvit.tasks.regression_predict.HeightPredictionWriter`; images from ``--data.predict_images``).
* :func:`train_from_config`: fit from a YAML file (plus overrides) and return the run folder.

``python -m rsvit.tasks.regression_runner fit --config ...`` runs it without the ``rsvit`` entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsvit.tasks.runner import LIGHTNING_SUBCOMMANDS, fit_config, instantiate_cli, run_cli

__all__ = ["build_regression_cli", "main", "run_regression_cli", "train_from_config"]


def _cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    from rsvit.datamodules.regression import HeightDataModule
    from rsvit.tasks.regression import DenseRegressionTask, HeightReport
    from rsvit.tasks.regression_predict import HeightPredictionWriter

    class _RegressionCLI(LightningCLI):
        """LightningCLI with the data linked into the task and the report callback always on."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(DenseRegressionTask, HeightDataModule, *args, **kwargs)

        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.link_arguments("data.in_chans", "model.in_chans")
            parser.link_arguments("data.pixel_size", "model.pixel_size", apply_on="instantiate")
            parser.add_lightning_class_args(HeightReport, "report")
            parser.add_lightning_class_args(HeightPredictionWriter, "prediction_writer")

    return _RegressionCLI


def build_regression_cli(args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
    """Parses ``args`` with the regression LightningCLI; ``run=False`` only instantiates."""
    return instantiate_cli(_cli_class(), args, run, **kwargs)


def run_regression_cli(args: list[str]) -> int:
    """``fit|validate|test|predict --config ...``. Returns the exit status."""
    return run_cli(build_regression_cli, args, LIGHTNING_SUBCOMMANDS)


def train_from_config(config_path: str | Path, overrides: list[str] | None = None) -> Path:
    """Fits the run a regression YAML config describes and returns its run folder.

    ``overrides`` are further LightningCLI arguments (``["--trainer.max_steps=20"]``). The folder holds
    ``config.yaml``, ``metrics.json``, ``val_predictions/`` and ``model.safetensors``.
    """
    from rsvit.tasks.regression import HeightReport

    return fit_config(build_regression_cli, config_path, overrides, HeightReport)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rsvit.tasks.regression_runner fit --config ...``."""
    return run_regression_cli(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
