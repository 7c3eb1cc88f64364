"""Cutting large segmentation images and their masks into the crop layouts the official configs read.

:func:`write_tiles` cuts one image/mask pair; :func:`tile_potsdam` and :func:`tile_isaid` apply it to
the whole ISPRS Potsdam and iSAID releases (see :mod:`rsvit.data.segmentation.benchmarks`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rsvit.data.io import read_image
from rsvit.data.segmentation.benchmarks import (
    ISAID_MASK_SUFFIX,
    ISAID_PALETTE,
    ISAID_SKIP,
    POTSDAM_CLUTTER,
    POTSDAM_PALETTE,
    POTSDAM_TRAIN_TILES,
    POTSDAM_VAL_TILES,
)
from rsvit.data.segmentation.datasets import SegmentationRecord, colours_to_index, pair_folders, read_mask
from rsvit.ops.windows import sliding_windows
from rsvit.viz.palettes import Colour

__all__ = ["tile_isaid", "tile_potsdam", "write_tiles"]


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

    Windows follow :func:`rsvit.ops.windows.sliding_windows`: the last row/column is shifted
    back to end at the border, so every crop is full size (smaller images give one whole-image crop).
    Colour masks (given ``palette``) are written as index maps, colours not in the palette as
    ``unknown_value`` with a warning stating their count; index masks are copied. Crops are named
    ``<name>_<y0>_<y1>_<x0>_<x1>``; 8-bit images become PNG, others GeoTIFF.
    """
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
    """Cuts iSAID images and colour masks into patches; returns the number of patches.

    Images (``images/P0000.png``) and colour masks (``masks/P0000_instance_color_RGB.png``) go
    into ``out/<split>/images`` and ``out/<split>/labels`` patches (896 px, overlap 384 = stride 512),
    with the masks converted to index maps.
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
