"""Prediction writers: what ``rsvit predict`` stores per image, in the run folder unless told otherwise.

:class:`FolderPredictionWriter` is the base of the dense families' writers (files per predicted item);
:class:`PredictionWriter` streams scene classification's ``predictions.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from rsvit.tasks.reports import run_dir
from rsvit.utils.atomic import commit_temp, reserve_temp

__all__ = ["FolderPredictionWriter", "PredictionWriter", "relative_name", "safe_stem"]


def safe_stem(path: str, index: int, prefix: str = "image") -> str:
    """A file-name-safe stem from ``path``, or ``<prefix>_<index>`` for items without one."""
    stem = Path(path).stem if path else f"{prefix}_{index:04d}"
    return _safe(stem)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def relative_name(path: str, base: Path | None) -> str | None:
    """``path`` relative to ``base`` without its suffix, its safe parts joined by ``__``.

    ``None`` when ``path`` does not lie under ``base``; ``Tile 2/images/a.jpg`` gives
    ``Tile_2__images__a``.
    """
    if base is None or not path:
        return None
    try:
        parts = Path(path).resolve().relative_to(base).with_suffix("").parts
    except ValueError:
        return None
    return "__".join(_safe(p) for p in parts) if parts else None


def _data_base(datamodule: Any) -> Path | None:
    """The folder the predicted paths are named relative to.

    The DataModule's prediction folder, else its ``root``.
    """
    hparams = getattr(datamodule, "hparams", None)
    predict = getattr(hparams, "predict_path", None) if hparams is not None else None
    for candidate in (predict, getattr(datamodule, "root", None)):
        if candidate is None or str(candidate).startswith("rsvit://"):
            continue
        folder = Path(candidate).expanduser()
        if folder.is_dir():
            return folder.resolve()
    return None


class FolderPredictionWriter(BasePredictionWriter):
    """Base of the writers that store files per predicted item in a folder.

    The folder defaults to ``<run folder>/predictions``.

    ``predict_step`` returns a dict of equally long lists; :attr:`columns` must be present,
    :attr:`optional_columns` may be (``None`` per item when absent). Each item goes to :meth:`write_item`
    with a unique name from its ``path``: its stem, or, when an earlier item of the run had the same stem
    (the Dubai set's ``Tile N/images/image_part_001.jpg``), its path relative to the DataModule's
    prediction folder or root (``Tile_2__images__image_part_001``), else the stem with ``_2``, ``_3``
    ...; ``<unnamed_prefix>_<n>`` without a path. Written files collect in ``written``.
    """

    columns: tuple[str, ...] = ("path", "prediction")
    optional_columns: tuple[str, ...] = ()
    unnamed_prefix = "image"

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.written: list[Path] = []
        self._base: Path | None = None
        self._used: set[str] = set()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._base = _data_base(getattr(trainer, "datamodule", None))
        self._used = set()

    def item_name(self, path: str, index: int) -> str:
        """The unique output name (without suffix, may hold ``/``) of the item at ``path``."""
        name = safe_stem(path, index, prefix=self.unnamed_prefix)
        if name in self._used:
            name = relative_name(path, self._base) or name
        unique, n = name, 1
        while unique in self._used:
            n += 1
            unique = f"{name}_{n}"
        self._used.add(unique)
        return unique

    def write_item(self, folder: Path, name: str, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not prediction or not isinstance(prediction, dict):
            return
        folder = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"
        present = [*self.columns, *(k for k in self.optional_columns if k in prediction)]
        lengths = {k: len(prediction[k]) for k in present}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"predict_step returned lists of different lengths: {lengths}")
        for i in range(lengths["path"]):
            item = {
                k: prediction[k][i] if k in prediction else None
                for k in (*self.columns, *self.optional_columns)
            }
            name = self.item_name(item["path"], batch_idx * 1000 + i)
            self.write_item(folder, name, item, pl_module)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv``: file, top-k classes and their probabilities, one row per image.

    Rows are streamed to a temporary file batch by batch and renamed when prediction ends. With several
    processes each writes its own ``predictions.rank{N}.csv``.

    Args:
        output: CSV path (default ``<run folder>/predictions.csv``).
        top_k: classes per row.
    """

    def __init__(self, output: str | None = None, top_k: int = 5) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.top_k = top_k
        self.path: Path | None = None
        self._file: Any = None
        self._tmp: str | None = None
        self._writer: Any = None

    def _target(self, trainer: L.Trainer) -> Path:
        path = Path(self.output) if self.output else run_dir(trainer) / "predictions.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path = self._target(trainer)
        self._tmp = reserve_temp(self.path)
        self._file = open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed at the end)
        self._writer = csv.writer(self._file)
        k = min(self.top_k, len(pl_module.class_names))
        header = ["file"]
        for i in range(1, k + 1):
            header += [f"class_{i}", f"prob_{i}"]
        self._writer.writerow(header)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if prediction is None:
            return
        probs: torch.Tensor = prediction["probs"]
        k = min(self.top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        names = pl_module.class_names
        for path, vals, idx in zip(prediction["path"], values.tolist(), indices.tolist(), strict=True):
            row: list[Any] = [path]
            for v, i in zip(vals, idx, strict=True):
                row += [names[i], f"{v:.6f}"]
            self._writer.writerow(row)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None or self._tmp is None or self.path is None:
            return
        self._file.close()
        commit_temp(self._tmp, self.path)
        self._file = self._tmp = self._writer = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._file is not None and self._tmp is not None:
            self._file.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._file = self._tmp = self._writer = None
