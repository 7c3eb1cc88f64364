"""``ChangeDataModule``: bitemporal pairs, joint augmentation and loaders for change detection.

A split is one of:

* a name: the pairs listed in ``list/<name>.txt`` under ``root`` (LEVIR-CD / CDD / WHU-CD convention);
* a list of file names or stems: exactly those pairs;
* ``"*"``: every pair found in the date folders.

Normalisation is explicit because change models disagree: the official BIT release feeds
``(x - 0.5) / 0.5`` of 0-1 pixels (the defaults here), ImageNet-pretrained backbones want ImageNet
statistics. Training samples get a random crop plus the same flips/rotation for both dates and the
mask (:class:`~rsvit.data.change.ChangeTransform`); evaluation uses whole, un-augmented pairs. The test
set is ``test_split`` when given, else the validation set; the predicted set is ``predict_split`` when
given, else the test set. Predicted pairs need no label: with ``predict_labels`` left unset, labels are
read when the dataset has a label folder (the prediction PNGs then colour true and false positives).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from rsvit.data.change import LAYOUTS, ChangeDetectionDataset, detect_layout
from rsvit.data.change.transforms import ChangeTransform
from rsvit.datamodules.base import DenseDataModule

__all__ = ["ALL_PAIRS", "CHANGE_CLASSES", "ChangeDataModule"]

ALL_PAIRS = "*"
CHANGE_CLASSES = ("no change", "change")
Split = str | list[str] | None


class ChangeDataModule(DenseDataModule):
    """Change-detection data (see the module docstring).

    Args:
        root: dataset folder (``A/``, ``B/``, ``label/`` or ``prev/``, ``curr/``, ``label/``).
        layout: ``"levir"``, ``"whu"`` or ``"auto"``.
        train_split, val_split, test_split, predict_split: list-file name, list of pair names, or ``"*"``.
        predict_root: folder of the pairs to predict (default ``root``), e.g. new unlabelled dates.
        predict_labels: read labels of the predicted pairs (default: when the label folder exists).
        crop_size: training crop (official BIT: 256, the LEVIR-CD crop size).
        batch_size: training batch; eval_batch_size: evaluation batch (default: ``batch_size``;
            evaluation pairs of one batch must share a size).
        num_workers: loader processes.
        mean, std: per-band normalisation of the 0-1 pixels (official BIT: 0.5 and 0.5).
        hflip, vflip, rot90: training geometry augmentation (the same for both dates and the mask).
        brightness, contrast, gamma: per-date photometric jitter amplitudes (0 = off).
        ignore_value: label value left out of loss and metrics (e.g. 255), else labels must be 0/1 or 0/255.
        ignore_index: what the task ignores (linked into it; 255 as the BIT loss).
        bands: 1-based bands to read from rasters; in_chans: bands the model takes.
        train_repeats: each training pair appears this many times per epoch (crops differ), giving small
            datasets epochs of a useful length.
    """

    def __init__(
        self,
        root: str,
        layout: Literal["levir", "whu", "auto"] = "auto",
        train_split: Split = "train",
        val_split: Split = "val",
        test_split: Split = None,
        predict_split: Split = None,
        predict_root: str | None = None,
        predict_labels: bool | None = None,
        crop_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        mean: list[float] = [0.5, 0.5, 0.5],  # noqa: B006 - shown as the default by the CLI
        std: list[float] = [0.5, 0.5, 0.5],  # noqa: B006
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: bool = True,
        brightness: float = 0.0,
        contrast: float = 0.0,
        gamma: float = 0.0,
        ignore_value: int | None = None,
        ignore_index: int = 255,
        bands: list[int] | None = None,
        in_chans: int = 3,
        train_repeats: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}"
            )
        if train_repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {train_repeats}")
        self.root = Path(root).expanduser()
        self.layout = layout
        self.in_chans = int(in_chans)
        self.ignore_index = int(ignore_index)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.train_transform = ChangeTransform(
            crop_size=crop_size,
            hflip=hflip,
            vflip=vflip,
            rot90=rot90,
            brightness=brightness,
            contrast=contrast,
            gamma=gamma,
            mean=self.mean,
            std=self.std,
        )
        self.eval_transform = ChangeTransform(
            crop_size=None, hflip=0.0, vflip=0.0, rot90=False, mean=self.mean, std=self.std
        )
        self._datasets: dict[str, ChangeDetectionDataset] = {}

    # -- what the task needs before setup ------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return list(CHANGE_CLASSES)

    @property
    def num_classes(self) -> int:
        return len(CHANGE_CLASSES)

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of each date (for exported weights)."""
        hp = self.hparams
        return {
            "input_size": [self.in_chans, int(hp.crop_size), int(hp.crop_size)],
            "mean": list(self.mean),
            "std": list(self.std),
            "bands": list(hp.bands) if hp.bands is not None else None,
        }

    # -- datasets ----------------------------------------------------------------------------------

    def _split_of(self, stage: str) -> Split:
        hp = self.hparams
        test = hp.test_split or hp.val_split
        if stage == "predict":
            # another folder has no reason to share this one's list files: default to all its pairs
            return hp.predict_split or (ALL_PAIRS if hp.predict_root else test)
        return {"train": hp.train_split, "val": hp.val_split, "test": test}[stage]

    def _predict_labels(self, root: Path) -> bool:
        if self.hparams.predict_labels is not None:
            return bool(self.hparams.predict_labels)
        layout = self.layout if self.layout != "auto" else detect_layout(root)
        return (root / LAYOUTS[layout][2]).is_dir()

    def dataset(self, stage: str) -> ChangeDetectionDataset:
        """The dataset of ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (built on first use)."""
        if stage not in ("train", "val", "test", "predict"):
            raise ValueError(f"unknown stage {stage!r}; expected train, val, test or predict")
        if stage not in self._datasets:
            split = self._split_of(stage)
            if split is None or split == []:
                raise ValueError(f"no {stage} data configured (set {stage}_split)")
            names = list(split) if isinstance(split, list) else None
            list_name = split if isinstance(split, str) and split != ALL_PAIRS else None
            root = self.root
            if stage == "predict" and self.hparams.predict_root:
                root = Path(self.hparams.predict_root).expanduser()
            self._datasets[stage] = ChangeDetectionDataset(
                root,
                split=list_name,
                layout=self.layout,  # type: ignore[arg-type]
                names=names,
                labels=self._predict_labels(root) if stage == "predict" else True,
                ignore_value=self.hparams.ignore_value,
                transform=self.train_transform if stage == "train" else self.eval_transform,
                bands=self.hparams.bands,
            )
        return self._datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for name in wanted.get(stage or "fit", ("train", "val")):
            self.dataset(name)

    # -- loaders -------------------------------------------------------------------------------------
