"""Segmentation datasets of the RSP experiments (ISPRS Potsdam, iSAID) and the Dubai aerial set.

Each is a :class:`~rsvit.data.segmentation.datasets.SegmentationDataset` with its class list, palette and
ignore rules fixed, over the folder layout the official configs use; :func:`tile_potsdam` and
:func:`tile_isaid` cut the original large images into those layouts.

**ISPRS Potsdam** (6000x6000 px tiles, 5 cm). Classes in index order: impervious_surface, building,
low_vegetation, tree, car, clutter, with RGB label colours white, blue, cyan, green, yellow, red. As in
the official config the model predicts the first **five** classes; clutter (index 5 / red) is ignored in
training and evaluation (the official code sets ``ignore_index=5``; here clutter maps to the ignore
index 255, which has the same effect). Band order of the original products: ``2_Ortho_RGB`` = R, G, B;
``4_Ortho_RGBIR`` = R, G, B, IR; ``3_Ortho_IRRG`` = IR, R, G. The RSP models use R, G, B.
Layout after tiling (as the official config reads it): ``img_dir/{train,val}/*.png`` and
``ann_dir/{train,val}/*.png`` (index maps 0..5, 255 for label colours not in the palette).

**iSAID** (patches of the DOTA images): 16 classes including background, which counts as a regular
class; ignore index 255. Layout: ``{train,val}/images/*.png`` with masks
``{train,val}/labels/<stem>_instance_color_RGB.png``, either converted to index maps (``mask_format=
"index"``, as the official preprocessing writes them) or the original colour masks (``"rgb"``).

**Dubai** ("Semantic segmentation of aerial imagery", Humans in the Loop / MBRSC, CC0):
``Tile N/images/image_part_XXX.jpg`` with colour masks ``Tile N/masks/image_part_XXX.png``, images of
varying size. The six classes use the colours found in the masks (they differ from the dataset's
``classes.json``); the few ``#000000`` pixels are ignored.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsvit.data.io import read_image
from rsvit.data.segmentation.datasets import (
    MaskFormat,
    SegmentationDataset,
    SegmentationRecord,
    colours_to_index,
    pair_folders,
    read_mask,
)
from rsvit.viz.palettes import Colour

__all__ = [
    "DUBAI_CLASSES",
    "DUBAI_IGNORE_COLOURS",
    "DUBAI_PALETTE",
    "ISAID_CLASSES",
    "ISAID_PALETTE",
    "ISAID_SKIP",
    "POTSDAM_CLASSES",
    "POTSDAM_CLUTTER",
    "POTSDAM_PALETTE",
    "POTSDAM_TRAIN_TILES",
    "POTSDAM_VAL_TILES",
    "DubaiDataset",
    "ISAIDDataset",
    "PotsdamDataset",
    "dubai_records",
    "tile_isaid",
    "tile_potsdam",
    "write_tiles",
]

# -- ISPRS Potsdam ------------------------------------------------------------------------------

POTSDAM_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car")
POTSDAM_PALETTE: tuple[Colour, ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
)
POTSDAM_CLUTTER: Colour = (255, 0, 0)  # class index 5 in the label files; ignored
POTSDAM_TRAIN_TILES = (
    "2_10",
    "2_11",
    "2_12",
    "3_10",
    "3_11",
    "3_12",
    "4_10",
    "4_11",
    "4_12",
    "5_10",
    "5_11",
    "5_12",
    "6_10",
    "6_11",
    "6_12",
    "6_7",
    "6_8",
    "6_9",
    "7_10",
    "7_11",
    "7_12",
    "7_7",
    "7_8",
    "7_9",
)
POTSDAM_VAL_TILES = (
    "5_15",
    "6_15",
    "6_13",
    "3_13",
    "4_14",
    "6_14",
    "5_14",
    "2_13",
    "4_15",
    "2_14",
    "5_13",
    "4_13",
    "3_14",
    "7_13",
)

# -- iSAID --------------------------------------------------------------------------------------

ISAID_CLASSES = (
    "background",
    "ship",
    "storage_tank",
    "baseball_diamond",
    "tennis_court",
    "basketball_court",
    "ground_track_field",
    "bridge",
    "large_vehicle",
    "small_vehicle",
    "helicopter",
    "swimming_pool",
    "roundabout",
    "soccer_ball_field",
    "plane",
    "harbor",
)
ISAID_PALETTE: tuple[Colour, ...] = (
    (0, 0, 0),
    (0, 0, 63),
    (0, 191, 127),
    (0, 63, 0),
    (0, 63, 127),
    (0, 63, 191),
    (0, 63, 255),
    (0, 127, 63),
    (0, 127, 127),
    (0, 0, 127),
    (0, 0, 191),
    (0, 0, 255),
    (0, 63, 63),
    (0, 127, 191),
    (0, 127, 255),
    (0, 100, 155),
)
ISAID_SKIP = ("P1527", "P1530")  # left out by the official patch script
ISAID_MASK_SUFFIX = "_instance_color_RGB.png"

# -- Dubai --------------------------------------------------------------------------------------

DUBAI_CLASSES = ("building", "land", "road", "vegetation", "water", "unlabeled")
DUBAI_PALETTE: tuple[Colour, ...] = (
    (0x3C, 0x10, 0x98),
    (0x84, 0x29, 0xF6),
    (0x6E, 0xC1, 0xE4),
    (0xFE, 0xDD, 0x3A),
    (0xE2, 0xA9, 0x29),
    (0x9B, 0x9B, 0x9B),
)
DUBAI_IGNORE_COLOURS: tuple[Colour, ...] = ((0, 0, 0),)


class PotsdamDataset(SegmentationDataset):
    """ISPRS Potsdam crops in the official layout (see the module docstring).

    Args:
        root: folder holding ``img_dir`` and ``ann_dir`` (written by :func:`tile_potsdam`).
        split: ``"train"``, ``"val"`` (or any sub-folder, e.g. ``"val_all"``).
        mask_format: ``"index"`` (label values 0..5, clutter 5 ignored) or ``"rgb"`` (colour-coded
            crops; red clutter ignored).
        **kwargs: further :class:`SegmentationDataset` arguments (transform, bands, ...).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        mask_format: MaskFormat = "index",
        **kwargs: Any,
    ) -> None:
        root = Path(root)
        records = pair_folders(root / "img_dir" / split, root / "ann_dir" / split, mask_suffix=".png")
        super().__init__(
            records,
            POTSDAM_CLASSES,
            mask_format=mask_format,
            palette=POTSDAM_PALETTE,
            ignore_index=kwargs.pop("ignore_index", 255),
            ignore_colours=(POTSDAM_CLUTTER,),
            ignore_values=(5,),
            source=str(root / "img_dir" / split),
            **kwargs,
        )


class ISAIDDataset(SegmentationDataset):
    """iSAID patches in the official layout (see the module docstring).

    Args:
        root: folder holding ``train/`` and ``val/`` (written by :func:`tile_isaid`).
        split: ``"train"`` or ``"val"``.
        mask_format: ``"index"`` (converted grey masks) or ``"rgb"`` (original colour masks).
        **kwargs: further :class:`SegmentationDataset` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        mask_format: MaskFormat = "index",
        **kwargs: Any,
    ) -> None:
        root = Path(root)
        records = pair_folders(
            root / split / "images", root / split / "labels", mask_suffix=ISAID_MASK_SUFFIX
        )
        super().__init__(
            records,
            ISAID_CLASSES,
            mask_format=mask_format,
            palette=ISAID_PALETTE,
            ignore_index=kwargs.pop("ignore_index", 255),
            source=str(root / split / "images"),
            **kwargs,
        )


def _tile_folder(root: Path, tile: int | str) -> Path:
    name = f"Tile {tile}" if isinstance(tile, int) or str(tile).isdigit() else str(tile)
    folder = root / name
    if not folder.is_dir():
        found = sorted(p.name for p in root.glob("Tile *")) if root.is_dir() else []
        raise FileNotFoundError(f"Dubai tile folder not found: {folder} (found: {found or 'none'})")
    return folder


def dubai_records(root: str | os.PathLike[str], tiles: Iterable[int | str]) -> list[SegmentationRecord]:
    """Image/mask pairs of the given tiles (``1`` or ``"Tile 1"``), in tile then file order."""
    root = Path(root)
    records: list[SegmentationRecord] = []
    for tile in tiles:
        folder = _tile_folder(root, tile)
        records += pair_folders(folder / "images", folder / "masks", mask_suffix=".png")
    return records


class DubaiDataset(SegmentationDataset):
    """The Dubai aerial set (or its bundled copy ``rsvit/assets/dubai_mini``), six colour-coded classes.

    Args:
        root: folder with ``Tile 1`` ... ``Tile N``.
        tiles: which tiles to use (the quick-start trains on 1-5 and validates on 6).
        **kwargs: further :class:`SegmentationDataset` arguments.
    """

    def __init__(
        self, root: str | os.PathLike[str], tiles: Sequence[int | str] = (1, 2, 3, 4, 5), **kwargs: Any
    ) -> None:
        super().__init__(
            dubai_records(root, tiles),
            DUBAI_CLASSES,
            mask_format="rgb",
            palette=DUBAI_PALETTE,
            ignore_index=kwargs.pop("ignore_index", 255),
            ignore_colours=DUBAI_IGNORE_COLOURS,
            source=f"{root} tiles {list(tiles)}",
            **kwargs,
        )


# ---------------------------------------------------------------------------------------------
# Tiling large images into crops
# ---------------------------------------------------------------------------------------------


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Writes ``(H, W)`` / ``(C, H, W)``: 8-bit with 1/3/4 bands as PNG, else GeoTIFF (renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            if array.dtype != np.uint8:
                raise ValueError(f"PNG crops need 8-bit data, got {array.dtype}; write .tif instead")
            data = array if array.ndim == 2 else array.transpose(1, 2, 0)
            if data.ndim == 3 and data.shape[-1] == 1:
                data = data[..., 0]
            Image.fromarray(np.ascontiguousarray(data)).save(tmp, format="PNG")
        else:
            import rasterio

            data = array[None] if array.ndim == 2 else array
            profile = {
                "driver": "GTiff",
                "count": data.shape[0],
                "height": data.shape[1],
                "width": data.shape[2],
            }
            with rasterio.open(tmp, "w", dtype=data.dtype, **profile) as dst:
                dst.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tiles(
    image_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    out_images: str | os.PathLike[str],
    out_masks: str | os.PathLike[str],
    crop: int,
    stride: int,
    palette: Sequence[Colour] | None = None,
    mask_suffix: str = ".png",
    name: str | None = None,
    bands: Sequence[int] | None = None,
    unknown_value: int = 255,
) -> list[SegmentationRecord]:
    """Cuts one large image and its mask into ``crop`` x ``crop`` pieces ``stride`` apart.

    Windows follow :func:`rsvit.models.sliding_window.sliding_windows`: the last row/column is shifted
    back to end at the border, so every crop is full size (smaller images give one whole-image crop).
    Colour masks (given ``palette``) are written as index maps, colours not in the palette as
    ``unknown_value`` with a warning stating their count; index masks are copied. Crops are named
    ``<name>_<y0>_<y1>_<x0>_<x1>``; 8-bit images become PNG, others GeoTIFF.
    """
    from rsvit.models.sliding_window import sliding_windows

    image_path, mask_path = Path(image_path), Path(mask_path)
    image = read_image(image_path, bands=list(bands) if bands is not None else None)
    if palette is not None:
        labels, unknown = colours_to_index(read_mask(mask_path, "rgb"), palette, unknown_value)
        if unknown:
            described = ", ".join("#{:02X}{:02X}{:02X}: {}".format(*c, n) for c, n in unknown.most_common(5))
            warnings.warn(
                f"{mask_path}: {sum(unknown.values())} pixels with colours not in the palette ({described}) "
                f"written as {unknown_value}",
                stacklevel=2,
            )
    else:
        labels = read_mask(mask_path, "index")
    if labels.shape != image.shape[-2:]:
        raise ValueError(
            f"mask {mask_path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but image {image_path} is "
            f"{image.shape[2]}x{image.shape[1]}"
        )
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"{mask_path}: label values must fit 0..255 for PNG index maps")
    labels = labels.astype(np.uint8)
    name = name or image_path.stem
    suffix = ".png" if image.dtype == np.uint8 and image.shape[0] in (1, 3, 4) else ".tif"
    out_images, out_masks = Path(out_images), Path(out_masks)
    records = []
    for y0, y1, x0, x1 in sliding_windows(image.shape[-2:], crop, stride):
        stem = f"{name}_{y0}_{y1}_{x0}_{x1}"
        image_out, mask_out = out_images / f"{stem}{suffix}", out_masks / f"{stem}{mask_suffix}"
        _save_atomic(image_out, image[:, y0:y1, x0:x1])
        _save_atomic(mask_out, labels[y0:y1, x0:x1])
        records.append(SegmentationRecord(image_out, mask_out))
    return records


def tile_potsdam(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    crop: int = 512,
    stride: int = 256,
    image_folder: str = "2_Ortho_RGB",
    image_token: str = "RGB",
    label_folder: str = "5_Labels_all",
    splits: dict[str, Sequence[str]] | None = None,
    bands: Sequence[int] | None = None,
) -> dict[str, int]:
    """Cuts the Potsdam tiles into the official ``img_dir``/``ann_dir`` layout (512 crops, stride 256).

    Reads ``root/image_folder/top_potsdam_<id>_<image_token>.tif`` and
    ``root/label_folder/top_potsdam_<id>_label.tif`` (RGB-coded); writes index maps with clutter as 5.
    ``splits`` defaults to the standard train/val tile ids. Returns the crop count per split.
    """
    root, out = Path(root), Path(out)
    splits = splits or {"train": POTSDAM_TRAIN_TILES, "val": POTSDAM_VAL_TILES}
    palette = (*POTSDAM_PALETTE, POTSDAM_CLUTTER)
    counts: dict[str, int] = {}
    for split, tiles in splits.items():
        n = 0
        for tile in tiles:
            image = root / image_folder / f"top_potsdam_{tile}_{image_token}.tif"
            label = root / label_folder / f"top_potsdam_{tile}_label.tif"
            for path in (image, label):
                if not path.is_file():
                    raise FileNotFoundError(f"Potsdam tile {tile}: {path} not found")
            n += len(
                write_tiles(
                    image,
                    label,
                    out / "img_dir" / split,
                    out / "ann_dir" / split,
                    crop,
                    stride,
                    palette=palette,
                    name=f"{tile}",
                    bands=bands,
                )
            )
        counts[split] = n
    return counts


def tile_isaid(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str,
    patch: int = 896,
    overlap: int = 384,
    skip: Sequence[str] = ISAID_SKIP,
) -> int:
    """Cuts iSAID images (``images/P0000.png``) and colour masks (``masks/P0000_instance_color_RGB.png``)
    into ``out/<split>/images`` and ``out/<split>/labels`` patches (896 px, overlap 384 = stride 512),
    with the masks converted to index maps. Returns the number of patches.
    """
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in 0..{patch - 1}, got {overlap}")
    records = pair_folders(images, masks, mask_suffix=ISAID_MASK_SUFFIX)
    out = Path(out)
    n = 0
    for record in records:
        if record.image.stem in skip:
            continue
        assert record.mask is not None
        n += len(
            write_tiles(
                record.image,
                record.mask,
                out / split / "images",
                out / split / "labels",
                patch,
                patch - overlap,
                palette=ISAID_PALETTE,
                mask_suffix=ISAID_MASK_SUFFIX,
            )
        )
    return n
