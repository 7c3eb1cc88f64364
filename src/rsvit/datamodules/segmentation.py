"""``SegmentationDataModule``: image + mask data for Lightning, for any of the segmentation datasets.

``dataset`` picks how ``root`` is read and what the ``*_split`` values mean:

* ``"dubai"``: ``root`` holds ``Tile 1`` ... ``Tile N``; a split is a list of tiles (``[1, 2, 3, 4, 5]``).
* ``"potsdam"`` / ``"isaid"``: the official layouts (:mod:`rsvit.data.segmentation`); a split is a
  sub-folder name (``train``, ``val``).
* ``"folders"``: ``image_dir`` / ``mask_dir`` templates with ``{split}`` (default
  ``images/{split}`` and ``masks/{split}``), file names paired by
  :func:`~rsvit.data.segmentation.pair_folders`; classes, palette, mask format and ignore rules come from
  the arguments.
* ``"file_list"``: a split is a text file of ``image mask`` lines (relative to ``root``).

``root`` (and ``predict_path``) may start with ``rsvit://`` to name a folder inside the installed
package, e.g. ``rsvit://assets/dubai_mini`` (the bundled demo data). The test set is ``test_split`` when
given, else the validation set. Evaluation batches hold whole images of any size (padded together by
:func:`~rsvit.data.segmentation.pad_collate`; padding is ignored by the metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from rsvit.data.segmentation import (
    DUBAI_CLASSES,
    DUBAI_IGNORE_COLOURS,
    DUBAI_PALETTE,
    ISAID_CLASSES,
    ISAID_MASK_SUFFIX,
    ISAID_PALETTE,
    POTSDAM_CLASSES,
    POTSDAM_CLUTTER,
    POTSDAM_PALETTE,
    MaskFormat,
    SegmentationDataset,
    SegmentationRecord,
    dubai_records,
    pad_collate,
    pair_folders,
    read_file_list,
)
from rsvit.data.segmentation.transforms import IMAGENET_MEAN, IMAGENET_STD, SegmentationTransform
from rsvit.datamodules.base import DenseDataModule
from rsvit.viz.palettes import parse_colour

__all__ = ["SegmentationDataModule", "resolve_path"]

DatasetKind = Literal["folders", "file_list", "dubai", "potsdam", "isaid"]
Split = str | list[str | int] | None

# Fixed settings of the named datasets: classes, palette, mask format, ignore colours / values, layout.
_PRESETS: dict[str, dict[str, Any]] = {
    "dubai": {
        "classes": DUBAI_CLASSES,
        "palette": DUBAI_PALETTE,
        "mask_format": "rgb",
        "ignore_colours": DUBAI_IGNORE_COLOURS,
        "ignore_values": (),
    },
    "potsdam": {
        "classes": POTSDAM_CLASSES,
        "palette": POTSDAM_PALETTE,
        "mask_format": "index",
        "ignore_colours": (POTSDAM_CLUTTER,),
        "ignore_values": (5,),
        "image_dir": "img_dir/{split}",
        "mask_dir": "ann_dir/{split}",
        "mask_suffix": ".png",
    },
    "isaid": {
        "classes": ISAID_CLASSES,
        "palette": ISAID_PALETTE,
        "mask_format": "index",
        "ignore_colours": (),
        "ignore_values": (),
        "image_dir": "{split}/images",
        "mask_dir": "{split}/labels",
        "mask_suffix": ISAID_MASK_SUFFIX,
    },
}


def resolve_path(text: str | Path) -> Path:
    """A path, where ``rsvit://sub/path`` means ``sub/path`` inside the installed ``rsvit`` package."""
    text = str(text)
    if text.startswith("rsvit://"):
        import rsvit

        return Path(rsvit.__file__).resolve().parent / text[len("rsvit://") :]
    return Path(text).expanduser()


class SegmentationDataModule(DenseDataModule):
    """Segmentation images, masks, joint transforms and loaders (see the module docstring).

    Args:
        root: dataset folder (``rsvit://...`` for package data).
        dataset: ``"folders"``, ``"file_list"``, ``"dubai"``, ``"potsdam"`` or ``"isaid"``.
        train_split, val_split, test_split: which images (meaning depends on ``dataset``).
        image_dir, mask_dir: ``{split}`` templates relative to ``root`` (``folders``; presets set their own).
        mask_suffix, image_token, mask_token: how mask names follow from image names (``folders``).
        classes: class names (``folders``/``file_list``; named datasets fix their own).
        palette: one ``"#RRGGBB"`` or ``[r, g, b]`` per class (needed for ``"rgb"`` masks).
        mask_format: ``"index"`` or ``"rgb"`` (default: the preset's, else ``"index"``).
        ignore_index: label ignored by loss and metrics (pads too).
        ignore_colours, ignore_values: mapped to ``ignore_index`` silently.
        predict_path: folder, image or file list to predict (default: the test set).
        bands: 1-based image bands to read; in_chans: bands the model takes.
        mean, std: normalisation per band in [0, 1] units.
        crop_size, resize_scale, ratio_range, cat_max_ratio, hflip, vflip, rot90, photometric: training
            augmentation (:class:`~rsvit.data.segmentation.transforms.SegmentationTransform`).
        batch_size: training batch per process; eval_batch_size: whole images per evaluation batch.
        num_workers: loader processes.
        train_repeats: each training image appears this many times per epoch (random crops differ), so
            small datasets give epochs of a useful length.
    """

    def __init__(
        self,
        root: str,
        dataset: DatasetKind = "folders",
        train_split: Split = "train",
        val_split: Split = "val",
        test_split: Split = None,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str | None = None,
        image_token: str = "",
        mask_token: str = "",
        classes: list[str] | None = None,
        palette: list[str | list[int]] | None = None,
        mask_format: MaskFormat | None = None,
        ignore_index: int = 255,
        ignore_colours: list[str | list[int]] | None = None,
        ignore_values: list[int] | None = None,
        predict_path: str | None = None,
        bands: list[int] | None = None,
        in_chans: int = 3,
        mean: list[float] = list(IMAGENET_MEAN),  # noqa: B006 - shown as the default by the CLI
        std: list[float] = list(IMAGENET_STD),  # noqa: B006
        crop_size: int = 512,
        resize_scale: int | None = None,
        ratio_range: tuple[float, float] | None = None,
        cat_max_ratio: float = 1.0,
        hflip: float = 0.5,
        vflip: float = 0.0,
        rot90: float = 0.0,
        photometric: bool = True,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 4,
        train_repeats: int = 1,
    ) -> None:
        super().__init__()
        # The palette reaches the task through a link; Lightning refuses equal hparam names with other values.
        self.save_hyperparameters(ignore=["palette"])
        if dataset not in ("folders", "file_list", *_PRESETS):
            raise ValueError(
                f"unknown dataset {dataset!r}; choose folders, file_list, dubai, potsdam or isaid"
            )
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}"
            )
        if train_repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {train_repeats}")
        preset = _PRESETS.get(dataset, {})
        if preset and classes is not None and list(classes) != list(preset["classes"]):
            raise ValueError(
                f"dataset {dataset!r} has fixed classes {list(preset['classes'])}; leave classes unset"
            )
        self.root = resolve_path(root)
        self.kind = dataset
        self._classes = [str(c) for c in (preset.get("classes") or classes or [])]
        if not self._classes:
            raise ValueError(f"dataset {dataset!r} needs the class names (classes: [...])")
        self.mask_format: MaskFormat = mask_format or preset.get("mask_format") or "index"
        raw_palette = palette if palette is not None else preset.get("palette")
        self._palette = [parse_colour(c) for c in raw_palette] if raw_palette is not None else None
        self._ignore_colours = [
            parse_colour(c) for c in (ignore_colours or preset.get("ignore_colours") or ())
        ]
        self._ignore_values = list(
            ignore_values if ignore_values is not None else preset.get("ignore_values", ())
        )
        self.image_dir = image_dir or preset.get("image_dir") or "images/{split}"
        self.mask_dir = mask_dir or preset.get("mask_dir") or "masks/{split}"
        self.mask_suffix = mask_suffix or preset.get("mask_suffix") or ".png"
        self.ignore_index = int(ignore_index)
        self.in_chans = int(in_chans)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        common = {"mean": mean, "std": std, "ignore_index": ignore_index}
        self.train_transform = SegmentationTransform(
            True,
            crop_size=crop_size,
            resize_scale=resize_scale,
            ratio_range=ratio_range,
            cat_max_ratio=cat_max_ratio,
            hflip=hflip,
            vflip=vflip,
            rot90=rot90,
            photometric=photometric,
            **common,
        )
        self.eval_transform = SegmentationTransform(False, crop_size=None, **common)
        self._datasets: dict[str, SegmentationDataset] = {}

    # -- what the task needs before setup ------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def palette(self) -> list[list[int]]:
        """One ``[r, g, b]`` per class (the dataset's, or display colours for index masks)."""
        if self._palette is None:
            from rsvit.viz.palettes import default_palette

            return [list(c) for c in default_palette(self.num_classes)]
        return [list(c) for c in self._palette]

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of its input (for exported weights)."""
        hp = self.hparams
        return {
            "input_size": [self.in_chans, int(hp.crop_size), int(hp.crop_size)],
            "mean": [float(v) for v in hp.mean],
            "std": [float(v) for v in hp.std],
            "bands": list(hp.bands) if hp.bands is not None else None,
        }

    # -- datasets ----------------------------------------------------------------------------------

    def _records(self, split: str | list[str | int]) -> tuple[list[SegmentationRecord], str]:
        if self.kind == "dubai":
            tiles = split if isinstance(split, list) else [t.strip() for t in str(split).split(",")]
            return dubai_records(self.root, tiles), f"{self.root} tiles {tiles}"
        if isinstance(split, list):
            raise ValueError(f"dataset {self.kind!r} takes one split name, got the list {split}")
        if self.kind == "file_list":
            path = self.root / split
            return read_file_list(path, self.root), str(path)
        images = self.root / self.image_dir.format(split=split)
        masks = self.root / self.mask_dir.format(split=split)
        records = pair_folders(
            images, masks, self.mask_suffix, self.hparams.image_token, self.hparams.mask_token
        )
        return records, str(images)

    def _make(
        self, records: list[SegmentationRecord], source: str, transform: SegmentationTransform
    ) -> SegmentationDataset:
        return SegmentationDataset(
            records,
            self._classes,
            mask_format=self.mask_format,
            palette=self._palette,
            ignore_index=self.ignore_index,
            ignore_colours=self._ignore_colours,
            ignore_values=self._ignore_values,
            transform=transform,
            bands=self.hparams.bands,
            num_bands=self.in_chans,
            source=source,
        )

    def _split_of(self, stage: str) -> Split:
        hp = self.hparams
        return {"train": hp.train_split, "val": hp.val_split, "test": hp.test_split or hp.val_split}[stage]

    def dataset(self, stage: str) -> SegmentationDataset:
        """The dataset of ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (built on first use)."""
        if stage not in self._datasets:
            if stage == "predict":
                self._datasets[stage] = self._predict_dataset()
            else:
                split = self._split_of(stage)
                if split is None or split == []:
                    raise ValueError(f"no {stage} data configured (set {stage}_split)")
                records, source = self._records(split)
                transform = self.train_transform if stage == "train" else self.eval_transform
                self._datasets[stage] = self._make(records, source, transform)
        return self._datasets[stage]

    def _predict_dataset(self) -> SegmentationDataset:
        if self.hparams.predict_path is None:
            return self.dataset("test")
        path = resolve_path(self.hparams.predict_path)
        from rsvit.data.segmentation import IMAGE_SUFFIXES

        if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
            records = read_file_list(path, self.root)
        elif path.is_file():
            records = [SegmentationRecord(path, None)]
        else:
            records = pair_folders(path, None)
        return self._make(records, str(path), self.eval_transform)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for name in wanted.get(stage or "fit", ("train", "val")):
            self.dataset(name)

    # -- loaders -------------------------------------------------------------------------------------

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return partial(pad_collate, ignore_index=self.ignore_index)
