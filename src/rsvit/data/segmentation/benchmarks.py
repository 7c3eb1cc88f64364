"""Segmentation datasets of the RSP experiments (ISPRS Potsdam, iSAID) and the Dubai aerial set.

Each is a :class:`~rsvit.data.segmentation.datasets.SegmentationDataset` with its class list, palette and
ignore rules fixed, over the folder layout the official configs use;
:func:`~rsvit.data.segmentation.tiling.tile_potsdam` and :func:`~rsvit.data.segmentation.tiling.tile_isaid`
cut the original large images into those layouts.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rsvit.data.segmentation.datasets import (
    MaskFormat,
    SegmentationDataset,
    SegmentationRecord,
    pair_folders,
)
from rsvit.viz.palettes import Colour

__all__ = [
    "DUBAI_CLASSES",
    "DUBAI_IGNORE_COLOURS",
    "DUBAI_PALETTE",
    "ISAID_CLASSES",
    "ISAID_MASK_SUFFIX",
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
        root: folder holding ``img_dir`` and ``ann_dir`` (written by
            :func:`~rsvit.data.segmentation.tiling.tile_potsdam`).
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
        root: folder holding ``train/`` and ``val/`` (written by
            :func:`~rsvit.data.segmentation.tiling.tile_isaid`).
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
