"""``SceneDataModule``: scene-classification data for Lightning, from split files or class folders.

Two ways to say which images train and which validate:

* split files (RSP label-file format, see :mod:`rsvit.data.classification.splits`):
  ``train_file`` / ``val_file`` (and optionally ``test_file``), file names relative to ``root / image_dir``;
* a class-folder tree (``layout="folders"``) or MillionAID hierarchy (``layout="millionaid"``) without
  files: a stratified split with ``train_fraction`` and ``split_seed`` is drawn on the fly (the same
  function ``rsvit split`` writes files with, so both give the same images).

The test set is ``test_file`` when given, else the validation set (as in RSP, whose "valid" lists are
the test part of each protocol). ``predict_path`` is a folder of images (searched recursively), one
image, or a label file.

Resuming is bit-exact for a single process without persistent workers (the task stores the random
states in its checkpoints). ``on_error="skip"`` is meant for single-process runs and evaluation: under
DDP a batch whose images are all unreadable would leave one process without a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Subset

from rsvit.data.classification.datasets import (
    IMAGE_SUFFIXES,
    FolderSceneDataset,
    LabelFileSceneDataset,
    MillionAIDDataset,
    SceneDataset,
    SceneRecord,
    collate_skip_none,
    find_images,
)
from rsvit.data.classification.splits import stratified_split
from rsvit.data.classification.transforms import RSP_AUTO_AUGMENT, SceneTransform

__all__ = ["SceneDataModule"]


class SceneDataModule(L.LightningDataModule):
    """Scene-classification images, transforms and loaders (see the module docstring).

    Args:
        root: dataset folder.
        layout: ``"folders"`` (one folder per class), ``"millionaid"`` (class hierarchy) or
            ``"label_files"`` (only ``train_file``/``val_file`` say what is where).
        train_file, val_file, test_file: RSP label files, relative to ``root`` unless absolute.
        image_dir: folder holding the images named in the label files, relative to ``root``.
        classes: fix the class list (default: from the training file or the folders).
        train_fraction, split_seed: the on-the-fly split when no files are given.
        predict_path: images to predict (folder, single image or label file).
        bands: 1-based bands to read; in_chans: bands the model takes (grey images are repeated).
        batch_size: per process (the learning-rate scaling of the task uses it).
        eval_batch_size: for validation/test/predict (default ``batch_size``).
        num_workers: loader processes.
        input_size, mean, std, scale, ratio, hflip, vflip, auto_augment, color_jitter, re_prob, re_mode,
            re_count, crop_pct, interpolation: see
            :class:`rsvit.data.classification.transforms.SceneTransform`.
        on_error: ``"raise"`` on unreadable images, or ``"skip"`` them with a warning and a count.
    """

    def __init__(
        self,
        root: str,
        layout: Literal["folders", "millionaid", "label_files"] = "label_files",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        image_dir: str = "all_img",
        classes: list[str] | None = None,
        train_fraction: float = 0.8,
        split_seed: int = 0,
        predict_path: str | None = None,
        bands: list[int] | None = None,
        in_chans: int = 3,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        input_size: int = 224,
        mean: list[float] = list(IMAGENET_DEFAULT_MEAN),  # noqa: B006 - shown as the default by the CLI
        std: list[float] = list(IMAGENET_DEFAULT_STD),  # noqa: B006
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        vflip: float = 0.0,
        auto_augment: str | None = RSP_AUTO_AUGMENT,
        color_jitter: float = 0.4,
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        on_error: Literal["raise", "skip"] = "raise",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if layout == "label_files" and train_file is None and val_file is None and test_file is None:
            raise ValueError("layout 'label_files' needs train_file and val_file (or test_file)")
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}"
            )
        self.root = Path(root)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.in_chans = int(in_chans)
        augment = {
            "scale": scale,
            "ratio": ratio,
            "hflip": hflip,
            "vflip": vflip,
            "auto_augment": auto_augment,
            "color_jitter": color_jitter,
            "re_prob": re_prob,
            "re_mode": re_mode,
            "re_count": re_count,
        }
        common = {"input_size": input_size, "mean": mean, "std": std, "interpolation": interpolation}
        self.train_transform = SceneTransform(True, **common, **augment)
        self.eval_transform = SceneTransform(False, **common, crop_pct=crop_pct)
        self._classes: list[str] | None = list(classes) if classes is not None else None
        self._splits: dict[str, SceneDataset | Subset] | None = None

    # -- what the task needs to know before setup ------------------------------------------------

    @property
    def classes(self) -> list[str]:
        """Class names (index = label); reading them may scan the folders or the training file."""
        if self._classes is None:
            self._classes = self._base_dataset("train").classes
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of its input (for exported weights)."""
        hp = self.hparams
        return {
            "input_size": [self.in_chans, int(hp.input_size), int(hp.input_size)],
            "mean": [float(v) for v in hp.mean],
            "std": [float(v) for v in hp.std],
            "bands": list(hp.bands) if hp.bands is not None else None,
            "interpolation": str(hp.interpolation),
            "crop_pct": float(hp.crop_pct),
        }

    # -- datasets ----------------------------------------------------------------------------------

    def _dataset_kwargs(self) -> dict[str, Any]:
        hp = self.hparams
        return {"bands": hp.bands, "num_bands": self.in_chans, "on_error": hp.on_error}

    def _label_file(self, name: str, classes: Sequence[str] | None) -> LabelFileSceneDataset:
        return LabelFileSceneDataset(
            self.root, name, image_dir=self.hparams.image_dir, classes=classes, **self._dataset_kwargs()
        )

    def _uses_label_files(self) -> bool:
        return self.hparams.train_file is not None or self.hparams.layout == "label_files"

    def _file_of(self, stage: str) -> str | None:
        hp = self.hparams
        return {"train": hp.train_file, "val": hp.val_file, "test": hp.test_file or hp.val_file}[stage]

    def _base_dataset(self, stage: str) -> SceneDataset:
        """The dataset before splitting: the label file of ``stage`` or the whole folder tree."""
        hp = self.hparams
        if self._uses_label_files():
            name = self._file_of(stage) or self._file_of("val") or self._file_of("train")
            assert name is not None
            return self._label_file(name, self._classes)
        cls = MillionAIDDataset if hp.layout == "millionaid" else FolderSceneDataset
        return cls(self.root, classes=self._classes, **self._dataset_kwargs())

    def _build_splits(self) -> dict[str, SceneDataset | Subset]:
        hp = self.hparams
        classes = self.classes
        if self._uses_label_files():
            return {
                stage: self._label_file(name, classes)
                for stage in ("train", "val", "test")
                if (name := self._file_of(stage)) is not None
            }
        whole = self._base_dataset("train")
        names = [r.path.relative_to(self.root).as_posix() for r in whole.records]
        train_idx, val_idx = stratified_split(
            whole.targets, names, hp.train_fraction, hp.split_seed, whole.classes
        )
        evaluation = self._base_dataset("val")  # a second view with the evaluation transform
        return {
            "train": Subset(whole, train_idx),
            "val": Subset(evaluation, val_idx),
            "test": Subset(evaluation, val_idx),
        }

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self._build_splits()
            for name, dataset in self._splits.items():
                base = dataset.dataset if isinstance(dataset, Subset) else dataset
                base.transform = self.train_transform if name == "train" else self.eval_transform

    def dataset(self, stage: str) -> SceneDataset | Subset:
        """The dataset of ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (after ``setup``)."""
        if stage == "predict":
            return self._predict_dataset()
        self.setup()
        assert self._splits is not None
        if stage not in self._splits:
            raise ValueError(f"no {stage} data configured (set train_file / val_file / test_file)")
        return self._splits[stage]

    def _predict_dataset(self) -> SceneDataset:
        path_str = self.hparams.predict_path
        if path_str is None:
            base = self.dataset("test")
            return base  # type: ignore[return-value]
        path = Path(path_str)
        if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
            return LabelFileSceneDataset(
                self.root,
                path,
                image_dir=self.hparams.image_dir,
                classes=self.classes,
                transform=self.eval_transform,
                **self._dataset_kwargs(),
            )
        images = [path] if path.is_file() else find_images(path)
        if not images:
            raise ValueError(f"no images found in {path} ({', '.join(sorted(IMAGE_SUFFIXES))})")
        records = [SceneRecord(p, -1) for p in images]
        return SceneDataset(records, self.classes, transform=self.eval_transform, **self._dataset_kwargs())

    # -- loaders -------------------------------------------------------------------------------------

    def _loader(self, stage: str, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        dataset = self.dataset(stage)
        if len(dataset) == 0:
            raise ValueError(f"the {stage} set is empty")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_skip_none,
            persistent_workers=False,  # fresh workers each epoch keep resumed runs bit-exact
        )

    def train_dataloader(self) -> DataLoader:
        # Whole batches only: batch-mode Mixup needs an even batch size.
        return self._loader("train", self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.eval_batch_size, shuffle=False, drop_last=False)
