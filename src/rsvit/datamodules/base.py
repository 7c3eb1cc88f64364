"""The loaders the dense-task DataModules share (segmentation, change detection, height regression).

A subclass provides ``dataset(stage)`` for ``"train"``, ``"val"``, ``"test"`` and ``"predict"``, the
attributes ``batch_size``, ``eval_batch_size`` and ``num_workers``, a ``train_repeats`` hyperparameter
(small datasets repeated within one epoch) and, if its samples need one, a :meth:`collate_fn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["DenseDataModule"]


class DenseDataModule(L.LightningDataModule):
    """Shuffled, repeated training batches; ordered evaluation and prediction batches."""

    batch_size: int
    eval_batch_size: int
    num_workers: int

    def dataset(self, stage: str) -> Dataset:
        raise NotImplementedError

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """How samples become a batch (``None``: PyTorch's default)."""
        return None

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            # never drop the only (partial) batch of a tiny training set
            drop_last=drop_last and len(dataset) >= batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = self.dataset("train")
        repeats = int(self.hparams.get("train_repeats", 1))
        if repeats > 1:
            dataset = Subset(dataset, list(range(len(dataset))) * repeats)  # type: ignore[arg-type]
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("predict"), self.eval_batch_size, shuffle=False, drop_last=False)
