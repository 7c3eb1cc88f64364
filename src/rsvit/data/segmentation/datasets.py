"""Generic image + mask datasets for semantic segmentation.

A :class:`SegmentationDataset` is a list of ``(image, mask)`` file pairs, found by
:func:`pair_folders` (an image folder and a mask folder with matching names) or read from a file list
(:func:`read_file_list`). Samples are dicts ``{"image": Tensor (C, H, W), "mask": int64 (H, W),
"path": str}`` and ``plot(sample)`` draws one.

Masks come in two encodings (``mask_format``):

* ``"index"``: one band of class indices (PNG grey or palette mode, GeoTIFF band 1). Values listed in
  ``ignore_values`` become the ignore index; other values outside ``0..num_classes-1`` (that are not
  the ignore index already) are counted, mapped to the ignore index and reported in a warning.
* ``"rgb"``: colour-coded masks; each colour of ``palette`` is one class (palette position = class
  index), colours in ``ignore_colours`` map silently to the ignore index, and any other colour is counted,
  mapped to the ignore index and reported in a warning that states the pixel count (once per file).

A mask whose size differs from its image is an error naming both files; an empty dataset is an error
when it is built. Images smaller than the training crop are padded by the transform
(:class:`rsvit.data.segmentation.transforms.SegmentationTransform`; image 0, mask ignore index).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rsvit.data.io import RASTER_SUFFIXES, read_image, to_unit_range
from rsvit.viz.images import display_image
from rsvit.viz.palettes import Colour, default_palette, parse_colour
from rsvit.viz.segmentation import segmentation_figure

__all__ = [
    "IMAGE_SUFFIXES",
    "MaskFormat",
    "SegmentationDataset",
    "SegmentationRecord",
    "colours_to_index",
    "pad_collate",
    "pair_folders",
    "read_file_list",
    "read_mask",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", *RASTER_SUFFIXES})

MaskFormat = Literal["index", "rgb"]
Transform = Callable[..., dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# Colour-coded masks
# ---------------------------------------------------------------------------------------------


def _codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_index(
    rgb: np.ndarray,
    palette: Sequence[Colour],
    ignore_index: int = 255,
    ignore_colours: Sequence[Colour] = (),
) -> tuple[np.ndarray, Counter[Colour]]:
    """Maps an ``(H, W, 3)`` colour mask to class indices.

    Returns ``(index mask int64 (H, W), counts of the colours found in neither list)``; those pixels and
    the ``ignore_colours`` become ``ignore_index``.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"colour masks must be (H, W, 3), got shape {rgb.shape}")
    codes = _codes(rgb)
    labels = np.full(codes.shape, ignore_index, dtype=np.int64)
    matched = np.zeros(codes.shape, dtype=bool)
    # One comparison per palette colour: palettes are short, and this is much faster than np.unique.
    for i, colour in enumerate(palette):
        hit = codes == (colour[0] << 16) | (colour[1] << 8) | colour[2]
        labels[hit] = i
        matched |= hit
    for colour in ignore_colours:
        matched |= codes == (colour[0] << 16) | (colour[1] << 8) | colour[2]
    unknown: Counter[Colour] = Counter()
    if not matched.all():
        found, counts = np.unique(codes[~matched], return_counts=True)
        for code, n in zip(found.tolist(), counts.tolist(), strict=True):
            unknown[((code >> 16) & 255, (code >> 8) & 255, code & 255)] = int(n)
    return labels, unknown


def _hex(colour: Colour) -> str:
    return "#{:02X}{:02X}{:02X}".format(*colour)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationRecord:
    """One image and its mask (``None`` for images to predict)."""

    image: Path
    mask: Path | None


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_folders(
    image_dir: str | os.PathLike[str],
    mask_dir: str | os.PathLike[str] | None,
    mask_suffix: str = ".png",
    image_token: str = "",
    mask_token: str = "",
    require_masks: bool = True,
) -> list[SegmentationRecord]:
    """Pairs every image of ``image_dir`` with ``mask_dir / (stem + mask_suffix)``.

    ``image_token``/``mask_token`` rename a trailing part of the stem: Potsdam's
    ``top_potsdam_2_10_RGB.tif`` pairs with ``top_potsdam_2_10_label.tif`` through ``image_token="_RGB"``,
    ``mask_token="_label"``, ``mask_suffix=".tif"``. Missing masks are an error naming the first one
    (``require_masks=False`` keeps such images with ``mask=None``). Files ending in ``mask_suffix`` are not
    taken as images when both folders are the same.
    """
    image_dir = Path(image_dir)
    images = _images_in(image_dir)
    if mask_dir is None:
        return [SegmentationRecord(p, None) for p in images]
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"mask folder not found: {mask_dir}")
    if mask_dir.resolve() == image_dir.resolve():
        images = [p for p in images if not p.name.endswith(mask_suffix) or mask_suffix == p.suffix]
    records: list[SegmentationRecord] = []
    missing: list[Path] = []
    for image in images:
        stem = image.stem
        if image_token and stem.endswith(image_token):
            stem = stem[: -len(image_token)] + mask_token
        mask = mask_dir / f"{stem}{mask_suffix}"
        if mask == image:
            continue
        if mask.is_file():
            records.append(SegmentationRecord(image, mask))
        elif require_masks:
            missing.append(mask)
        else:
            records.append(SegmentationRecord(image, None))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(images)} images in {image_dir} have no mask, e.g. {missing[0]} "
            "is missing; check mask_suffix / image_token / mask_token"
        )
    return records


def read_file_list(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[SegmentationRecord]:
    """Reads ``image [mask]`` pairs, one per line (``#`` comments), paths relative to ``root``.

    ``root`` defaults to the list's folder. Lines with one path are images without masks (prediction).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list not found: {path}")
    base = Path(root) if root is not None else path.parent
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) > 2:
            raise ValueError(
                f"{path}:{number}: expected 'image [mask]', got {len(parts)} fields (spaces in names?)"
            )
        image = base / parts[0]
        mask = base / parts[1] if len(parts) == 2 else None
        for file in (image, mask):
            if file is not None and not file.is_file():
                raise FileNotFoundError(f"{path}:{number}: file not found: {file}")
        records.append(SegmentationRecord(image, mask))
    return records


def read_mask(path: str | os.PathLike[str], mask_format: MaskFormat) -> np.ndarray:
    """An index mask as ``(H, W)`` integers, or a colour mask as ``(H, W, 3)`` uint8.

    Index masks may be grey or palette PNGs (the stored indices are used, not the palette colours),
    or the first band of a raster. A colour image given as index mask is an error suggesting
    ``mask_format="rgb"`` (unless its three bands are equal, then band 1 is used).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    if path.suffix.lower() in RASTER_SUFFIXES:
        array = read_image(path)
        if mask_format == "index":
            if array.shape[0] > 1 and not all(np.array_equal(array[0], b) for b in array[1:]):
                raise ValueError(
                    f"{path} has {array.shape[0]} different bands; colour masks need mask_format='rgb'"
                )
            return array[0]
        if array.shape[0] < 3:
            raise ValueError(f"{path} has {array.shape[0]} band(s); colour masks need 3")
        return np.ascontiguousarray(array[:3].transpose(1, 2, 0)).astype(np.uint8)
    from PIL import Image

    with Image.open(path) as img:
        if mask_format == "rgb":
            return np.asarray(img.convert("RGB"))
        if img.mode in ("L", "P", "I", "I;16", "1"):
            return np.asarray(img).astype(np.int64)
        rgb = np.asarray(img.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].astype(np.int64)
    raise ValueError(f"{path} is a colour image; set mask_format='rgb' and give the palette of its classes")


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def _default_transform(image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(to_unit_range(image)))}
    if mask is not None:
        out["mask"] = torch.from_numpy(np.ascontiguousarray(mask)).long()
    return out


class SegmentationDataset(Dataset):
    """Images with per-pixel class masks (see the module docstring).

    Args:
        records: image/mask pairs.
        classes: class names; mask value ``i`` (or ``palette[i]``) is ``classes[i]``.
        mask_format: ``"index"`` or ``"rgb"``.
        palette: one colour per class (``"#RRGGBB"`` or ``[r, g, b]``); required for ``"rgb"`` masks, used
            for display otherwise (default: :func:`default_palette`).
        ignore_index: label of pixels that count neither in the loss nor in the metrics.
        ignore_colours: colours mapped to ``ignore_index`` without a warning (``"rgb"`` masks).
        ignore_values: index values mapped to ``ignore_index`` without a warning (``"index"`` masks).
        transform: ``transform(image, mask) -> {"image", "mask"}``, e.g. a
            :class:`~rsvit.data.segmentation.transforms.SegmentationTransform` (default: scale to
            [0, 1] only).
        bands: 1-based image bands to read.
        num_bands: bands the model expects; grey images are repeated, other differences are errors.
        warn_unknown: warn (once per mask file) about unknown colours / values.
    """

    def __init__(
        self,
        records: Sequence[SegmentationRecord],
        classes: Sequence[str],
        mask_format: MaskFormat = "index",
        palette: Sequence[str | Sequence[int]] | None = None,
        ignore_index: int = 255,
        ignore_colours: Sequence[str | Sequence[int]] = (),
        ignore_values: Sequence[int] = (),
        transform: Transform | None = None,
        bands: Sequence[int] | None = None,
        num_bands: int | None = 3,
        warn_unknown: bool = True,
        source: str = "",
    ) -> None:
        if mask_format not in ("index", "rgb"):
            raise ValueError(f"mask_format must be 'index' or 'rgb', got {mask_format!r}")
        self.records = list(records)
        where = f" in {source}" if source else ""
        if not self.records:
            raise ValueError(f"empty segmentation dataset: no image/mask pairs found{where}")
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ValueError("a segmentation dataset needs at least one class")
        if 0 <= ignore_index < len(self.classes):
            raise ValueError(
                f"ignore_index {ignore_index} collides with class {self.classes[ignore_index]!r}"
            )
        if mask_format == "rgb" and palette is None:
            raise ValueError("colour-coded masks (mask_format='rgb') need a palette: one colour per class")
        self.palette: list[Colour] = (
            [parse_colour(c) for c in palette] if palette is not None else default_palette(len(self.classes))
        )
        if len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.classes)} classes")
        if len(set(self.palette)) != len(self.palette):
            raise ValueError("palette colours must be distinct")
        self.mask_format: MaskFormat = mask_format
        self.ignore_index = int(ignore_index)
        self.ignore_colours = [parse_colour(c) for c in ignore_colours]
        self.ignore_values = [int(v) for v in ignore_values]
        self.transform: Transform = transform or _default_transform
        self.bands = list(bands) if bands is not None else None
        self.num_bands = num_bands
        self.warn_unknown = warn_unknown
        self.unknown: Counter[Any] = Counter()  # colour or value -> pixels, over all reads of this process
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read_image(self, path: Path) -> np.ndarray:
        """``(C, H, W)`` in the stored dtype, with the band rule of the class docstring."""
        array = read_image(path, bands=self.bands)
        want = self.num_bands
        if want is not None and array.shape[0] != want:
            if array.shape[0] == 1:
                return np.repeat(array, want, axis=0)
            if array.shape[0] == 4 and want == 3 and self.bands is None and path.suffix.lower() == ".png":
                return array[:3]  # RGBA PNG: drop the alpha band
            raise ValueError(
                f"{path} has {array.shape[0]} bands but the model expects {want}; select bands with "
                f"bands=[...] (1-based) or use in_chans={array.shape[0]}"
            )
        return array

    def read_labels(self, path: Path) -> np.ndarray:
        """The mask of ``path`` as ``(H, W)`` int64 class indices with the ignore rules applied."""
        raw = read_mask(path, self.mask_format)
        if self.mask_format == "rgb":
            labels, unknown = colours_to_index(raw, self.palette, self.ignore_index, self.ignore_colours)
            what = "colours not in the palette"
            described = ", ".join(f"{_hex(c)}: {n}" for c, n in unknown.most_common(5))
        else:
            labels = raw.astype(np.int64)
            for value in self.ignore_values:
                labels[labels == value] = self.ignore_index
            bad = (labels < 0) | (labels >= self.num_classes)
            bad &= labels != self.ignore_index
            values, counts = np.unique(labels[bad], return_counts=True)
            unknown = Counter({int(v): int(n) for v, n in zip(values, counts, strict=True)})
            labels[bad] = self.ignore_index
            what = f"values outside 0..{self.num_classes - 1}"
            described = ", ".join(f"{v}: {n}" for v, n in unknown.most_common(5))
        if unknown:
            self.unknown.update(unknown)
            if self.warn_unknown and path not in self._warned:
                self._warned.add(path)
                total = sum(unknown.values())
                warnings.warn(
                    f"{path}: {total} pixels with {what} ({described}) mapped to ignore index "
                    f"{self.ignore_index}",
                    stacklevel=2,
                )
        return labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.read_image(record.image)
        mask = None
        if record.mask is not None:
            mask = self.read_labels(record.mask)
            if mask.shape != image.shape[-2:]:
                raise ValueError(
                    f"mask {record.mask} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {record.image} "
                    f"is {image.shape[2]}x{image.shape[1]}; masks must match their image pixel for pixel"
                )
        sample = self.transform(image, mask) if mask is not None else self.transform(image)
        sample["path"] = str(record.image)
        return sample

    def class_frequencies(self) -> dict[str, int]:
        """Labelled pixels per class over the whole dataset (reads every mask)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for record in self.records:
            if record.mask is None:
                continue
            labels = self.read_labels(record.mask)
            valid = labels[labels != self.ignore_index]
            counts += np.bincount(valid.ravel(), minlength=self.num_classes)[: self.num_classes]
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}

    def plot(
        self,
        sample: dict[str, Any],
        prediction: torch.Tensor | np.ndarray | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rgb: Sequence[int] = (0, 1, 2),
    ) -> Any:
        """A matplotlib figure: image, mask (and prediction) in the palette colours, with a legend.

        ``mean``/``std`` undo the transform's normalisation; ``rgb`` picks the displayed bands.
        """
        image = torch.as_tensor(sample["image"]).detach().float().cpu()
        if mean is not None and std is not None:
            image = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
        return segmentation_figure(
            display_image(image, rgb),
            self.classes,
            self.palette,
            mask=sample.get("mask"),
            prediction=prediction,
            title=Path(str(sample.get("path", ""))).name,
        )


def pad_collate(batch: list[dict[str, Any]], ignore_index: int = 255) -> dict[str, Any]:
    """Stacks samples of different sizes by padding at the bottom/right (image 0, mask ``ignore_index``).

    ``"size"`` holds each sample's ``(height, width)`` before padding, so outputs can be cropped back.
    """
    if not batch:
        raise ValueError("empty batch")
    height = max(s["image"].shape[-2] for s in batch)
    width = max(s["image"].shape[-1] for s in batch)
    out: dict[str, Any] = {
        "image": torch.stack(
            [
                F.pad(s["image"], (0, width - s["image"].shape[-1], 0, height - s["image"].shape[-2]))
                for s in batch
            ]
        ),
        "size": torch.tensor([list(s["image"].shape[-2:]) for s in batch], dtype=torch.int64),
        "path": [s.get("path", "") for s in batch],
    }
    if all("mask" in s for s in batch):
        out["mask"] = torch.stack(
            [
                F.pad(
                    s["mask"],
                    (0, width - s["mask"].shape[-1], 0, height - s["mask"].shape[-2]),
                    value=ignore_index,
                )
                for s in batch
            ]
        )
    return out
