"""``BaseTask``: what every rsvit Lightning task does the same way, so a family writes only what differs.

A family task subclasses :class:`BaseTask` and gets

* the network from a :class:`~rsvit.models.ModelSpec` (:meth:`BaseTask.network_from`) and its starting
  weights (:meth:`BaseTask.load_weights`);
* the optimiser from config, else the family's :attr:`BaseTask.default_optimizer`;
* the evaluation lifecycle: validation and test batches go to the family's :meth:`BaseTask.evaluation_step`,
  at the end of the epoch its :meth:`BaseTask.compute_evaluation` computes and resets the metrics, and the
  base logs them as ``<stage>/<name>`` and keeps the entry in ``evaluation[stage]`` for the report;
* the ``model.safetensors`` export (:meth:`BaseTask.export_model`), the family adding its metadata in
  :meth:`BaseTask.export_extra`;
* its place in the command line (:meth:`BaseTask.command_line`): the DataModule it trains on, which data
  attributes are linked into which task arguments, and the always-on report and prediction-writer callbacks.
  The one ``rsvit fit|validate|test|predict`` (:mod:`rsvit.cli.lightning`) reads this from the class the
  config names, so a new family needs no edit to a central table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from rsvit.models.spec import ModelSpec, build_model, save_model, task_spec
from rsvit.tasks.optim import default_optimizer

__all__ = ["BaseTask", "CommandLine", "Evaluation", "Link", "json_safe"]


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively through dicts and lists (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class Link:
    """One value the command line copies from the DataModule into the task.

    Args:
        source: DataModule init argument, or attribute when ``on_instantiate``.
        target: task init argument.
        on_instantiate: read the attribute of the built DataModule (e.g. ``num_classes`` found on disk)
            instead of the parsed argument.
    """

    source: str
    target: str
    on_instantiate: bool = False


@dataclass(frozen=True)
class CommandLine:
    """How a task class plugs into ``rsvit fit|validate|test|predict``.

    Args:
        datamodule: the DataModule class (or base class) the task trains on; a config may name a subclass.
        links: values linked from the data into the task.
        callbacks: always-on callbacks by config key (``report``, ``prediction_writer``), configurable
            as ``--report.monitor=...``.
    """

    datamodule: type[L.LightningDataModule]
    links: tuple[Link, ...] = ()
    callbacks: Mapping[str, type[L.Callback]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """What a family computed at the end of an evaluation epoch.

    Args:
        logged: ``(name, value)`` pairs logged as ``<stage>/<name>``, in order.
        entry: the report entry (``epoch`` and ``step`` are added in front).
    """

    logged: list[tuple[str, float]]
    entry: dict[str, Any]


class BaseTask(L.LightningModule):
    """Shared machinery of the rsvit tasks (see the module docstring).

    Subclasses set :attr:`family` (the ``ModelSpec.task``), :attr:`default_backbone`,
    :attr:`default_optimizer`, :attr:`progress_metric`, and implement :meth:`compute_evaluation` and
    :meth:`command_line`.
    """

    family: ClassVar[str] = ""
    default_backbone: ClassVar[str] = "resnet50"
    default_optimizer: ClassVar[tuple[str, dict[str, Any]]] = ("AdamW", {})
    progress_metric: ClassVar[str] = ""  # shown in the progress bar
    sync_eval_logs: ClassVar[bool] = False  # the metrics are synchronised already; logging needs no reduction

    spec: ModelSpec | None
    evaluation: dict[str, dict[str, Any]]
    examples: list[dict[str, Any]]

    # -- the command line ----------------------------------------------------------------------------

    @classmethod
    def command_line(cls) -> CommandLine:
        """The DataModule, links and callbacks of this task in ``rsvit fit`` (see :class:`CommandLine`)."""
        raise NotImplementedError(f"{cls.__name__} does not say how it runs from the command line")

    # -- network, weights, optimiser ------------------------------------------------------------------

    def network_from(
        self, model: ModelSpec | dict[str, Any] | nn.Module | None, **overrides: Any
    ) -> nn.Module:
        """Sets ``self.spec`` and returns the network.

        ``model`` itself when it is a module (its ``spec``
        attribute, if any, is kept), else the one its spec describes with ``overrides`` (e.g. the linked
        ``num_classes``) applied.
        """
        if isinstance(model, nn.Module):
            self.spec = getattr(model, "spec", None)
            return model
        self.spec = self.adapt_spec(
            task_spec(model, self.family, self.default_backbone, type(self).__name__, **overrides)
        )
        return build_model(self.spec)

    def adapt_spec(self, spec: ModelSpec) -> ModelSpec:
        """Hook: a family's changes to the spec before the network is built (none by default)."""
        return spec

    def record_spec(self) -> None:
        """Stores the full spec in the hyperparameters (call after ``save_hyperparameters``)."""
        if self.spec is not None:
            self.hparams["model"] = self.spec.to_dict()

    def load_weights(self, weights: str | None, backbone_weights: str | None = None) -> None:
        """Loads whole-model and/or backbone-only starting weights, non-strictly (see ``rsvit.weights``)."""
        if weights or backbone_weights:
            from rsvit.weights import load_starting_weights

            load_starting_weights(self.model, weights, backbone_weights)

    def set_optimizer(self, optimizer: Any | None) -> None:
        """Keeps the optimiser factory from config, or the family's default."""
        name, settings = self.default_optimizer
        self.optimizer_factory = optimizer if optimizer is not None else default_optimizer(name, settings)

    def make_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The configured optimiser over ``params`` (parameters or parameter groups)."""
        return self.optimizer_factory(params)

    # -- evaluation lifecycle -------------------------------------------------------------------------

    def evaluation_step(self, batch: Any, stage: str) -> None:
        """Updates the ``stage`` (``"val"`` or ``"test"``) metrics with a batch; may keep examples to plot."""
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.examples = []  # validation examples for the report's figures, refilled every validation

    def compute_evaluation(self, stage: str) -> Evaluation:
        """Computes (synchronised over processes) and resets the ``stage`` metrics."""
        raise NotImplementedError

    def _eval_epoch_end(self, stage: str) -> None:
        result = self.compute_evaluation(stage)  # on every process: computing synchronises
        if self.trainer.sanity_checking:
            return
        for name, value in result.logged:
            self.log(
                f"{stage}/{name}", value, prog_bar=name == self.progress_metric, sync_dist=self.sync_eval_logs
            )
        self.evaluation[stage] = {
            "epoch": int(self.current_epoch),
            "step": int(self.global_step),
            **result.entry,
        }

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- data, run report and export ----------------------------------------------------------------

    def attached_datamodule(self) -> L.LightningDataModule | None:
        """The DataModule of the trainer this task runs in, if any."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def datamodule_preprocessing(self) -> dict[str, Any] | None:
        """The attached DataModule's ``preprocessing()`` (input size, mean/std, bands), if any."""
        datamodule = self.attached_datamodule()
        return datamodule.preprocessing() if hasattr(datamodule, "preprocessing") else None

    def undo_data_normalisation(self, images: torch.Tensor) -> torch.Tensor | None:
        """``images`` (float, on the CPU) with the DataModule's evaluation normalisation undone, for plots.

        ``None`` when the DataModule has no ``eval_transform.denormalize``.
        """
        transform = getattr(self.attached_datamodule(), "eval_transform", None)
        if transform is None or not hasattr(transform, "denormalize"):
            return None
        return transform.denormalize(images.float().cpu())

    def default_preprocessing(self) -> dict[str, Any]:
        """What :meth:`export_model` writes when given no preprocessing: the DataModule's, else nothing."""
        return self.datamodule_preprocessing() or {}

    def export_classes(self) -> tuple[str, ...] | None:
        """Class names written with the model (``None`` for value outputs)."""
        names = getattr(self, "class_names", None)
        return tuple(names) if names is not None else None

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """Family metadata written with the model (evaluation window, palette, units ...)."""
        return {}

    def export_model(self, path: str | os.PathLike[str], preprocessing: dict[str, Any] | None = None) -> Path:
        """Writes the network with its spec and metadata; :func:`rsvit.models.load_model` reads it back.

        ``preprocessing`` (``input_size``, ``mean``, ``std``, ``bands``) defaults to the DataModule's.
        """
        from rsvit.weights import WeightsMetadata

        if self.spec is None:
            raise ValueError(
                "cannot export a model given as nn.Module without a ModelSpec ('spec' attribute)"
            )
        if preprocessing is None:
            preprocessing = self.default_preprocessing()
        bands = preprocessing.get("bands")
        names = preprocessing.get("band_names")
        metadata = WeightsMetadata(
            input_size=preprocessing.get("input_size"),
            mean=preprocessing.get("mean"),
            std=preprocessing.get("std"),
            band_names=tuple(names) if names else tuple(f"band_{b}" for b in bands) if bands else None,
            classes=self.export_classes(),
            extra={
                # The 1-based band selection the model was trained on; predict-raster applies it.
                **({"bands": [int(b) for b in bands]} if bands else {}),
                **self.export_extra(preprocessing),
                "global_step": int(self.global_step) if self._trainer is not None else 0,
            },
        )
        path = Path(path)
        save_model(path, self.model, self.spec, metadata)
        return path
