"""``DetectionDataModule``: DOTA-format folders for oriented detection in Lightning.

A split is a folder ``root/<split>`` holding ``images/`` and ``labelTxt/`` (``"."``: ``root`` itself).
Folders of whole images are split into patches first when ``patch_size`` is set: the patches
(:func:`~rsvit.data.detection.split.split_dataset`, DOTA's window rule, objects kept when at least
``iof_threshold`` of them lies inside) are written once to ``split_dir/<split>`` and reused (a split
ends by writing ``split_report.txt``; without it the folder is split again). Batches hold
the images stacked (padded to a common size) and the boxes, polygons, labels, difficult flags as lists.

HRSC2016 (``label_format="hrsc"``) is read from its own layout (``AllImages/*.bmp`` and
``Annotations/*.xml`` per split by default), its rotated boxes turned into DOTA polygons of the one
class; its images are not split but resized (``resize``, official ``(1333, 800)``), and detections are
mapped back to the images' own pixels for the mAP and the predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rsvit.data.detection.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DotaDetectionDataset,
    LabelFormat,
    UnknownClasses,
    detection_collate,
)
from rsvit.data.detection.labels import DOTA_V1_0_CLASSES
from rsvit.data.detection.transforms import DetectionAugment
from rsvit.datamodules.base import DenseDataModule

__all__ = ["SPLIT_DONE", "DetectionDataModule"]

SPLIT_DONE = "split_report.txt"  # marks a finished split folder (its counts)


class DetectionDataModule(DenseDataModule):
    """Oriented-detection images and labels, box-moving augmentation and loaders.

    Args:
        root: dataset folder; a split is a sub-folder (``"."`` for ``root`` itself).
        train_split, val_split, test_split: sub-folders (test defaults to validation).
        image_dir, label_dir: folder names inside a split.
        classes: class names in label order (default DOTA-v1.0's 15).
        unknown_classes: ``"raise"`` on objects of other classes, or ``"skip"`` them.
        keep_empty: keep images / patches without objects (training and evaluation).
        min_size: objects with a side at or below this many pixels are ignored (official 2).
        patch_size, gap, iof_threshold, split_dir: split whole images into patches first (when
            ``patch_size`` is set; ``split_dir`` defaults to ``root/patches_<size>``).
        label_format: ``"dota"`` (``labelTxt``) or ``"hrsc"`` (HRSC2016 XML; ``image_dir`` /
            ``label_dir`` default to ``AllImages`` / ``Annotations``; not split into patches).
        resize: ``(long, short)`` bound to resize whole images to, aspect ratio kept (``None``: as is).
        predict_split: folder to predict (default: the test split).
        mean, std: RGB normalisation in ``[0, 1]`` units (official ImageNet values).
        hflip, vflip, rot90: training augmentation probabilities (official 1x: 0.5, 0.5, 0).
        batch_size, eval_batch_size, num_workers, train_repeats: loaders.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        image_dir: str | None = None,
        label_dir: str | None = None,
        classes: list[str] = list(DOTA_V1_0_CLASSES),  # noqa: B006 - shown as the default by the CLI
        unknown_classes: UnknownClasses = "raise",
        keep_empty: bool = True,
        min_size: float = 2.0,
        patch_size: int | None = None,
        gap: int = 200,
        iof_threshold: float = 0.7,
        split_dir: str | None = None,
        predict_split: str | None = None,
        mean: list[float] = list(IMAGENET_MEAN),  # noqa: B006
        std: list[float] = list(IMAGENET_STD),  # noqa: B006
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: float = 0.0,
        batch_size: int = 2,
        eval_batch_size: int = 2,
        num_workers: int = 2,
        train_repeats: int = 1,
        label_format: LabelFormat = "dota",
        resize: list[int] | None = None,
    ) -> None:
        super().__init__()
        hrsc = label_format == "hrsc"
        if image_dir is None:
            image_dir = "AllImages" if hrsc else "images"
        if label_dir is None:
            label_dir = "Annotations" if hrsc else "labelTxt"
        if hrsc and patch_size is not None:
            raise ValueError("HRSC2016 images are not split into patches: unset patch_size (use resize)")
        if resize is not None and patch_size is not None:
            raise ValueError("resize applies to whole images: unset patch_size or resize")
        self.save_hyperparameters()
        self.hparams.image_dir, self.hparams.label_dir = image_dir, label_dir  # the defaults resolved
        if not classes:
            raise ValueError("give the class names (classes: [...])")
        if train_repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {train_repeats}")
        if patch_size is not None and patch_size <= gap:
            raise ValueError(f"patch_size ({patch_size}) must be larger than gap ({gap})")
        self.root = Path(root).expanduser()
        self.split_dir = Path(split_dir).expanduser() if split_dir else self.root / f"patches_{patch_size}"
        self._classes = [str(c) for c in classes]
        self.in_chans = 3
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.augment = DetectionAugment(hflip, vflip, rot90)
        self._datasets: dict[str, DotaDetectionDataset] = {}

    @property
    def eval_transform(self) -> DetectionDataModule:
        """What undoes the normalisation for plots (:meth:`denormalize`)."""
        return self

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` images back to ``[0, 1]`` RGB."""
        mean = torch.tensor(self.hparams.mean, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.hparams.std, dtype=images.dtype).view(1, 3, 1, 1)
        return images * std + mean

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of its input (for exported weights)."""
        size = self.hparams.patch_size
        return {
            "input_size": [3, int(size), int(size)] if size else None,
            "mean": [float(v) for v in self.hparams.mean],
            "std": [float(v) for v in self.hparams.std],
            "bands": None,
        }

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        return detection_collate

    def _split_of(self, stage: str) -> str:
        hp = self.hparams
        split = {
            "train": hp.train_split,
            "val": hp.val_split,
            "test": hp.test_split or hp.val_split,
            "predict": hp.predict_split or hp.test_split or hp.val_split,
        }[stage]
        if split is None:
            raise ValueError(f"no {stage} data configured (set {stage}_split)")
        return split

    def folder(self, split: str) -> Path:
        """The folder a split's items are read from (its patches when splitting, written on first use)."""
        source = self.root / split
        hp = self.hparams
        if hp.patch_size is None:
            return source
        target = self.split_dir / split
        done = target / SPLIT_DONE
        if not done.is_file():
            from rsvit.data.detection.split import split_dataset
            from rsvit.utils.atomic import atomic_write_text

            report = split_dataset(
                source,
                target,
                patch_size=int(hp.patch_size),
                gap=int(hp.gap),
                iof_threshold=float(hp.iof_threshold),
                keep_empty=bool(hp.keep_empty),
                image_dir=hp.image_dir,
                label_dir=hp.label_dir,
            )
            atomic_write_text(done, f"{report}\n")  # written last: an interrupted split is redone
        return target

    def prepare_data(self) -> None:
        if self.hparams.patch_size is not None:
            for stage in ("train", "val"):
                self.folder(self._split_of(stage))

    def dataset(self, stage: str) -> DotaDetectionDataset:
        """The dataset of ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (built on first use)."""
        if stage not in self._datasets:
            hp = self.hparams
            image_dir, label_dir = (
                ("images", "labelTxt") if hp.patch_size is not None else (hp.image_dir, hp.label_dir)
            )
            self._datasets[stage] = DotaDetectionDataset(
                self.folder(self._split_of(stage)),
                self._classes,
                image_dir=image_dir,
                label_dir=label_dir,
                unknown_classes=hp.unknown_classes,
                keep_empty=hp.keep_empty,
                min_size=hp.min_size,
                mean=hp.mean,
                std=hp.std,
                augment=self.augment if stage == "train" else None,
                label_format=hp.label_format,
                resize=hp.resize,
            )
        return self._datasets[stage]
