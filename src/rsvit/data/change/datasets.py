"""Bitemporal change-detection data: datasets and tile cropping.

Two folder layouts are read, matched by file stem (any image suffix):

* ``levir`` (LEVIR-CD, CDD): ``A/`` (date 1), ``B/`` (date 2), ``label/``, optional
  ``list/<split>.txt`` with one file name per line;
* ``whu`` (WHU-CD): ``prev/`` (date 1), ``curr/`` (date 2), ``label/`` (list files work the same).

Labels are single-band masks stored as 0/255 or 0/1 and returned as 0/1. With ``ignore_value=255``
labels are read as 0/1 with 255 meaning "do not score" (the ignore index of the change loss and
metrics). Anything else raises :class:`ChangeLabelError` with the file and the values found, because
a silently mis-mapped mask (e.g. a JPEG-compressed label) corrupts every metric downstream.

:func:`crop_tiles` cuts 1024x1024 tiles into non-overlapping 256x256 crops, the LEVIR-CD training
protocol; :class:`~rsvit.data.change.transforms.ChangeTransform` augments both dates and the label with
the same geometry.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from rsvit.data.io import RASTER_SUFFIXES, read_image, to_unit_range
from rsvit.utils.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "ChangeDataError",
    "ChangeDetectionDataset",
    "ChangeLabelError",
    "MissingPartnerError",
    "crop_tiles",
    "detect_layout",
    "read_change_label",
    "read_list_file",
]

Layout = Literal["levir", "whu"]
LAYOUTS: dict[str, tuple[str, str, str]] = {"levir": ("A", "B", "label"), "whu": ("prev", "curr", "label")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class ChangeDataError(ValueError):
    """A bitemporal pair that cannot be used as it is (e.g. dates of different sizes)."""


class ChangeLabelError(ChangeDataError):
    """A change mask whose values are not a binary 0/255 or 0/1 coding."""


class MissingPartnerError(FileNotFoundError):
    """A file of a pair (date A, date B or label) is missing."""


def _index_folder(folder: Path) -> dict[str, Path]:
    """Stem -> file for the images in ``folder``; two files with one stem are ambiguous and refused."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in found:
                raise ChangeDataError(f"ambiguous files for {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return found


def detect_layout(root: Path) -> Layout:
    """``"levir"`` when ``root`` has ``A/`` and ``B/``, ``"whu"`` when it has ``prev/`` and ``curr/``."""
    for name, (a, b, _) in LAYOUTS.items():
        if (root / a).is_dir() and (root / b).is_dir():
            return name  # type: ignore[return-value]
    raise MissingPartnerError(f"{root} has neither A/ and B/ (LEVIR-CD, CDD) nor prev/ and curr/ (WHU-CD)")


def read_list_file(path: Path) -> list[str]:
    """Stems named in a list file (one name per line, suffix optional, blank lines skipped)."""
    if not path.is_file():
        raise MissingPartnerError(f"list file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [Path(n).stem if Path(n).suffix.lower() in IMAGE_SUFFIXES else n for n in names if n]


def _drop_alpha(array: np.ndarray, path: Path) -> np.ndarray:
    """PNG/JPEG alpha is transparency, not a band: RGBA -> RGB and LA -> L (rasters keep all bands)."""
    if path.suffix.lower() not in RASTER_SUFFIXES and array.shape[0] in (2, 4):
        return array[: array.shape[0] - 1]
    return array


def read_change_label(path: str | os.PathLike[str], ignore_value: int | None = None) -> np.ndarray:
    """``(H, W)`` int64 change mask in {0, 1} (plus ``ignore_value`` when given) from a stored label.

    Without ``ignore_value`` the file must hold a subset of {0, 255} or of {0, 1}; with it, a subset of
    {0, 1, ignore_value}. Multi-band labels are accepted when all bands are equal (RGB-saved masks).
    """
    path = Path(path)
    raw = _drop_alpha(read_image(path), path)
    if raw.shape[0] > 1 and not all(np.array_equal(raw[0], band) for band in raw[1:]):
        raise ChangeLabelError(f"{path}: label has {raw.shape[0]} bands that differ; expected one band")
    label = raw[0].astype(np.int64)
    values = sorted(int(v) for v in np.unique(label))
    if ignore_value is None:
        if set(values) <= {0, 255}:
            return (label == 255).astype(np.int64)
        if set(values) <= {0, 1}:
            return label
        expected = "0/255 or 0/1"
    else:
        if set(values) <= {0, 1, ignore_value}:
            return label
        expected = f"0/1 with {ignore_value} = ignore"
    shown = values if len(values) <= 12 else [*values[:12], "..."]
    raise ChangeLabelError(f"{path.name}: label values {shown} found, expected {expected} ({path})")


class ChangeDetectionDataset(Dataset[dict[str, Any]]):
    """Bitemporal pairs with change masks from a LEVIR-CD/CDD or WHU-CD folder.

    Pairs come from ``names`` if given, else ``list/<split>.txt`` if ``split`` is given, else every
    image in the date-A folder. Missing partners are reported at construction (all of them, naming
    the files), so a broken download fails before training starts rather than hours into it.
    Samples: ``{"image_a", "image_b": float (C, H, W) in [0, 1], "mask": int64 (H, W), "path"}``
    (no ``"mask"`` when ``labels=False``); ``path`` is the date-A file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = None,
        layout: Layout | Literal["auto"] = "auto",
        names: Sequence[str] | None = None,
        labels: bool = True,
        ignore_value: int | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        bands: list[int] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingPartnerError(f"dataset folder not found: {self.root}")
        self.layout: Layout = detect_layout(self.root) if layout == "auto" else layout
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {sorted(LAYOUTS)}")
        self.folders = LAYOUTS[self.layout] if labels else LAYOUTS[self.layout][:2]
        self.labels = labels
        self.ignore_value = ignore_value
        self.transform = transform
        self.bands = bands
        indexes = []
        for folder in self.folders:
            if not (self.root / folder).is_dir():
                raise MissingPartnerError(f"{self.root} has no {folder}/ folder ({self.layout} layout)")
            indexes.append(_index_folder(self.root / folder))
        source = "the folders"
        if names is not None:
            wanted = [Path(n).stem if Path(n).suffix.lower() in IMAGE_SUFFIXES else n for n in names]
        elif split is not None:
            list_path = self.root / "list" / f"{split}.txt"
            wanted = read_list_file(list_path)
            source = str(list_path)
        else:
            wanted = list(indexes[0])
            # a file only in B/ or label/ is as broken as one only in A/
            wanted += sorted(set().union(*indexes[1:]) - set(indexes[0]))
        problems = []
        for name in wanted:
            missing = [f for f, index in zip(self.folders, indexes, strict=True) if name not in index]
            if missing:
                present = [str(index[name]) for index in indexes if name in index]
                have = ", ".join(present) if present else f"nothing (named in {source})"
                problems.append(
                    f"{name}: no file in {', '.join(m + '/' for m in missing)} to pair with {have}"
                )
        if problems:
            raise MissingPartnerError(
                f"{len(problems)} incomplete pair(s) under {self.root}:\n  " + "\n  ".join(problems)
            )
        self.names = wanted
        self.files = [tuple(index[name] for index in indexes) for name in wanted]

    def __len__(self) -> int:
        return len(self.files)

    def _read_image(self, path: Path) -> np.ndarray:
        array = read_image(path, self.bands)
        return array if self.bands is not None else _drop_alpha(array, path)

    def load(self, index: int) -> dict[str, Any]:
        """The untransformed sample ``index`` (sizes and label values checked)."""
        files = self.files[index]
        image_a, image_b = self._read_image(files[0]), self._read_image(files[1])
        if image_a.shape != image_b.shape:
            raise ChangeDataError(
                f"dates differ: {files[0]} is {_describe(image_a)} but {files[1]} is {_describe(image_b)}"
            )
        sample: dict[str, Any] = {
            "image_a": torch.from_numpy(to_unit_range(image_a).copy()),
            "image_b": torch.from_numpy(to_unit_range(image_b).copy()),
            "path": str(files[0]),
        }
        if self.labels:
            mask = read_change_label(files[2], self.ignore_value)
            if mask.shape != image_a.shape[1:]:
                raise ChangeDataError(
                    f"label {files[2]} is {mask.shape[1]}x{mask.shape[0]} (WxH) but {files[0]} is "
                    f"{_describe(image_a)}"
                )
            sample["mask"] = torch.from_numpy(mask)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample

    def validate(self) -> None:
        """Load every pair once and raise one :class:`ChangeDataError` listing all bad pairs."""
        problems = []
        for i in range(len(self)):
            try:
                self.load(i)
            except ChangeDataError as err:
                problems.append(str(err))
        if problems:
            raise ChangeDataError(
                f"{len(problems)} bad pair(s) under {self.root}:\n  " + "\n  ".join(problems)
            )

    def plot(self, sample: dict[str, Any], prediction: torch.Tensor | np.ndarray | None = None) -> Any:
        """Figure A | B | prediction | label (TP/FP/FN colours when both are known)."""
        from rsvit.viz.change import change_figure

        return change_figure(
            sample["image_a"],
            sample["image_b"],
            prediction=prediction,
            mask=sample.get("mask"),
            title=Path(str(sample.get("path", ""))).name,
            ignore_index=255 if self.ignore_value is None else self.ignore_value,
        )


def _describe(image: np.ndarray) -> str:
    return f"{image.shape[2]}x{image.shape[1]} (WxH) with {image.shape[0]} band(s)"


def crop_tiles(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    size: int = 256,
    layout: Layout | Literal["auto"] = "auto",
    names: Sequence[str] | None = None,
    list_name: str | None = None,
) -> list[str]:
    """Cut every pair of ``src`` into non-overlapping ``size`` crops written as PNG under ``dst``.

    The LEVIR-CD protocol turns each 1024x1024 tile into 16 crops of 256x256. Crops are named
    ``<stem>_<y>_<x>`` (pixel offsets of the top-left corner, row first, 4 digits) in the same layout
    folders; pixel values are copied unchanged (labels stay 0/255). Tile sides must be multiples of
    ``size`` so no pixel is silently dropped. Each file is written atomically; with ``list_name`` the
    crop names are also written to ``dst/list/<list_name>.txt``. Returns the crop names.
    """
    from PIL import Image

    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    dataset = ChangeDetectionDataset(src, layout=layout, names=names)
    dst = Path(dst)
    written: list[str] = []
    for name, files in zip(dataset.names, dataset.files, strict=True):
        images = []
        for path in files:
            with Image.open(path) as img:
                img.load()
                images.append(img.copy())
        sizes = {img.size for img in images}
        if len(sizes) != 1:
            listing = ", ".join(
                f"{p} is {img.size[0]}x{img.size[1]}" for p, img in zip(files, images, strict=True)
            )
            raise ChangeDataError(f"{name}: files of the pair differ in size: {listing} (WxH)")
        width, height = images[0].size
        if width % size or height % size:
            raise ChangeDataError(
                f"{files[0]} is {width}x{height} (WxH), not a multiple of the crop size {size}"
            )
        for y in range(0, height, size):
            for x in range(0, width, size):
                crop_name = f"{name}_{y:04d}_{x:04d}"
                for folder, img in zip(dataset.folders, images, strict=True):
                    buf = io.BytesIO()
                    img.crop((x, y, x + size, y + size)).save(buf, format="PNG")
                    atomic_write_bytes(dst / folder / f"{crop_name}.png", buf.getvalue())
                written.append(crop_name)
    if list_name is not None:
        atomic_write_text(dst / "list" / f"{list_name}.txt", "".join(f"{n}.png\n" for n in written))
    return written
