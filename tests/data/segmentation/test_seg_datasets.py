"""Dataset definitions: Dubai (real data), Potsdam and iSAID colour maps and tiling (synthetic tiles)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.data.segmentation.benchmarks import (
    DUBAI_CLASSES,
    ISAID_CLASSES,
    ISAID_PALETTE,
    POTSDAM_CLUTTER,
    POTSDAM_PALETTE,
    DubaiDataset,
    ISAIDDataset,
    PotsdamDataset,
)
from rsvit.data.segmentation.tiling import tile_isaid, tile_potsdam
from rsvit.datamodules.segmentation import SegmentationDataModule, resolve_path
from rsvit.viz.palettes import colorize


def test_dubai_reader_on_the_real_set(data_dir: Path) -> None:
    root = data_dir / "dubai-seg"
    train = DubaiDataset(root, tiles=[1, 2, 3, 4, 5])
    val = DubaiDataset(root, tiles=["Tile 6"])
    assert len(train) == 45 and len(val) == 9
    sizes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every mask colour is a class or the ignored black
        for ds in (train, val):
            for i in range(0, len(ds), 4):
                sample = ds[i]
                sizes.add(tuple(sample["image"].shape[-2:]))
                assert sample["mask"].shape == sample["image"].shape[-2:]
                values = set(sample["mask"].unique().tolist())
                assert values <= set(range(6)) | {255}
    assert len(sizes) > 3  # images of varying size
    counts = val.class_frequencies()
    assert set(counts) == set(DUBAI_CLASSES) and all(n > 0 for n in counts.values())
    assert not train.unknown and not val.unknown


def test_dubai_black_pixels_are_ignored(data_dir: Path) -> None:
    ds = DubaiDataset(data_dir / "dubai-seg", tiles=[1, 2, 3, 4, 5, 6])
    ignored = 0
    for i in range(len(ds)):
        labels = ds.read_labels(ds.records[i].mask)  # type: ignore[arg-type]
        raw = np.asarray(Image.open(ds.records[i].mask).convert("RGB"))
        black = (raw == 0).all(axis=-1)
        assert (labels[black] == 255).all() and (labels[~black] != 255).all()
        ignored += int(black.sum())
    assert ignored > 0


def test_bundled_copy_reads_like_the_full_set() -> None:
    root = resolve_path("rsvit://assets/dubai_mini")
    assert (root / "README.md").is_file()
    train, val = DubaiDataset(root, tiles=[1, 2, 3, 4, 5]), DubaiDataset(root, tiles=[6])
    assert len(train) == 10 and len(val) == 2
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total < 3_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = val[0]
    assert max(sample["image"].shape[-2:]) <= 512


def _potsdam_tile(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 6, (h, w))
    colours = np.array([*POTSDAM_PALETTE, POTSDAM_CLUTTER], dtype=np.uint8)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, colours[classes], classes


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_potsdam_tiling_and_colour_map(tmp_path: Path) -> None:
    image, label_rgb, classes = _potsdam_tile(100, 90)
    label_rgb[0, 0] = (10, 10, 10)  # a colour outside the palette
    raw = tmp_path / "raw"
    (raw / "2_Ortho_RGB").mkdir(parents=True)
    (raw / "5_Labels_all").mkdir(parents=True)
    Image.fromarray(image).save(raw / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif")
    Image.fromarray(label_rgb).save(raw / "5_Labels_all" / "top_potsdam_2_10_label.tif")
    with pytest.warns(UserWarning, match="1 pixels with colours not in the palette"):
        counts = tile_potsdam(raw, tmp_path / "out", crop=32, stride=16, splits={"train": ["2_10"]})
    # rows: ceil((100-32)/16)+1 = 6 windows, cols: ceil((90-32)/16)+1 = 5
    assert counts == {"train": 30}
    crops = sorted((tmp_path / "out" / "img_dir" / "train").glob("*.png"))
    assert len(crops) == 30
    last = tmp_path / "out" / "ann_dir" / "train" / "2_10_68_100_58_90.png"
    assert last.is_file()  # the last window is shifted back to end at the border
    written = np.asarray(Image.open(last))
    assert np.array_equal(written, classes[68:100, 58:90].astype(np.uint8))

    ds = PotsdamDataset(tmp_path / "out", "train")
    assert ds.classes == ["impervious_surface", "building", "low_vegetation", "tree", "car"]
    sample = ds[[Path(r.image).name for r in ds.records].index("2_10_0_32_0_32.png")]
    expected = classes[:32, :32].copy()
    expected[expected == 5] = 255  # clutter ignored
    expected[0, 0] = 255  # unknown colour
    assert torch.equal(sample["mask"], torch.from_numpy(expected))
    assert torch.equal(sample["image"], torch.from_numpy(image[:32, :32].transpose(2, 0, 1) / 255).float())


def test_potsdam_rgb_crops(tmp_path: Path) -> None:
    image, label_rgb, classes = _potsdam_tile(16, 16)
    Image.fromarray(image).save(
        (tmp_path / "img_dir" / "val").mkdir(parents=True) or tmp_path / "img_dir/val/a.png"
    )
    Image.fromarray(label_rgb).save(
        (tmp_path / "ann_dir" / "val").mkdir(parents=True) or tmp_path / "ann_dir/val/a.png"
    )
    mask = PotsdamDataset(tmp_path, "val", mask_format="rgb")[0]["mask"]
    assert torch.equal(mask, torch.from_numpy(np.where(classes == 5, 255, classes)))


def test_isaid_tiling_and_colour_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    classes = rng.integers(0, 16, (40, 50))
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(images / "P0001.png")
    Image.fromarray(colorize(classes, ISAID_PALETTE)).save(masks / "P0001_instance_color_RGB.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        images / "P1527.png"
    )  # skipped like the official script
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(masks / "P1527_instance_color_RGB.png")
    n = tile_isaid(images, masks, tmp_path / "patches", "train", patch=32, overlap=12)
    assert n == 4  # stride 20: rows at 0, 8; cols at 0, 18
    ds = ISAIDDataset(tmp_path / "patches", "train")
    assert len(ds) == 4 and ds.classes == list(ISAID_CLASSES) and len(ds.classes) == 16
    names = [r.image.name for r in ds.records]
    sample = ds[names.index("P0001_8_40_18_50.png")]
    assert torch.equal(sample["mask"], torch.from_numpy(classes[8:40, 18:50]))
    # The original colour masks read directly through the palette give the same labels.
    rgb = ISAIDDataset.__new__(ISAIDDataset)
    from rsvit.data.segmentation import SegmentationDataset, SegmentationRecord

    record = SegmentationRecord(images / "P0001.png", masks / "P0001_instance_color_RGB.png")
    SegmentationDataset.__init__(rgb, [record], ISAID_CLASSES, mask_format="rgb", palette=ISAID_PALETTE)
    assert torch.equal(rgb[0]["mask"], torch.from_numpy(classes))


def test_datamodule_presets(data_dir: Path) -> None:
    dm = SegmentationDataModule(
        str(data_dir / "dubai-seg"), "dubai", [1, 2], [6], crop_size=64, num_workers=0
    )
    assert dm.classes == list(DUBAI_CLASSES) and dm.num_classes == 6
    assert dm.palette[0] == [0x3C, 0x10, 0x98]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["mask"].shape == (8, 64, 64)
    with pytest.raises(ValueError, match="fixed classes"):
        SegmentationDataModule(str(data_dir / "dubai-seg"), "dubai", classes=["a"])
    with pytest.raises(FileNotFoundError, match="Dubai tile folder not found"):
        SegmentationDataModule(str(data_dir / "dubai-seg"), "dubai", [9], [6]).dataset("train")
