"""Generic segmentation dataset: index and colour masks, ignore rules and bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.data.segmentation import (
    SegmentationDataset,
    colours_to_index,
    pad_collate,
    pair_folders,
    read_file_list,
)
from rsvit.data.segmentation.transforms import SegmentationTransform
from rsvit.viz.palettes import colorize, parse_colour

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_parse_colour_forms() -> None:
    assert parse_colour("#3C1098") == (60, 16, 152)
    assert parse_colour("3c1098") == (60, 16, 152)
    assert parse_colour([1, 2, 3]) == (1, 2, 3)
    with pytest.raises(ValueError, match="hex"):
        parse_colour("#12345")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        parse_colour([1, 2, 300])


def test_index_masks_from_folders(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 255], [5, 1, 0, 2]], dtype=np.uint8)  # 5: outside 3 classes
    _write(tmp_path / "img" / "a.png", _image(2, 4))
    _write(tmp_path / "ann" / "a.png", labels)
    records = pair_folders(tmp_path / "img", tmp_path / "ann")
    ds = SegmentationDataset(records, ["x", "y", "z"], mask_format="index")
    with pytest.warns(UserWarning, match=r"1 pixels with values outside 0..2 \(5: 1\)"):
        sample = ds[0]
    expected = labels.astype(np.int64)
    expected[1, 0] = 255
    assert torch.equal(sample["mask"], torch.from_numpy(expected))
    assert sample["image"].shape == (3, 2, 4) and sample["image"].dtype == torch.float32
    assert ds.unknown == {5: 1}


def test_ignore_values_map_silently(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", _image(2, 3))
    _write(tmp_path / "ann" / "a.png", np.array([[0, 1, 5], [5, 5, 0]], dtype=np.uint8))
    ds = SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b"], ignore_values=[5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = ds[0]["mask"]
    assert mask.tolist() == [[0, 1, 255], [255, 255, 0]]


def test_palette_masks_count_unknown_colours(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[0, :] = (255, 0, 0)
    rgb[1, :] = (0, 255, 0)
    rgb[2, :2] = (0, 0, 255)
    rgb[2, 2] = (12, 34, 56)  # unknown
    rgb[2, 3] = (0, 0, 0)  # ignored colour
    _write(tmp_path / "images" / "t.jpg", _image(3, 4))
    _write(tmp_path / "masks" / "t_label.png", rgb)
    records = pair_folders(tmp_path / "images", tmp_path / "masks", mask_suffix="_label.png")
    ds = SegmentationDataset(
        records,
        ["r", "g", "b"],
        mask_format="rgb",
        palette=["#FF0000", "#00FF00", [0, 0, 255]],
        ignore_colours=["#000000"],
    )
    with pytest.warns(UserWarning, match=r"1 pixels with colours not in the palette \(#0C2238: 1\)"):
        mask = ds[0]["mask"]
    assert mask.tolist() == [[0] * 4, [1] * 4, [2, 2, 255, 255]]
    assert ds.unknown == {(12, 34, 56): 1}
    with warnings.catch_warnings():  # warned once per file
        warnings.simplefilter("error")
        ds[0]
    assert ds.unknown == {(12, 34, 56): 2}  # but still counted


def test_colours_to_index_and_colorize_round_trip() -> None:
    index = np.random.default_rng(1).integers(0, 3, (5, 6))
    labels, unknown = colours_to_index(colorize(index, PALETTE), PALETTE)
    assert not unknown
    assert np.array_equal(labels, index)
    assert colorize(np.array([[255]]), PALETTE, ignore_colour=(7, 7, 7)).tolist() == [[[7, 7, 7]]]


def test_palette_mode_png_read_as_indices(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    img = Image.fromarray(labels, mode="P")
    img.putpalette([9, 9, 9, 200, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 9))
    (tmp_path / "ann").mkdir()
    img.save(tmp_path / "ann" / "a.png")
    _write(tmp_path / "img" / "a.png", _image(2, 2))
    ds = SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b", "c"])
    assert ds[0]["mask"].tolist() == labels.tolist()


def test_colour_mask_given_as_index_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", _image(2, 2))
    _write(tmp_path / "ann" / "a.png", np.full((2, 2, 3), (255, 0, 0), dtype=np.uint8))
    ds = SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b"])
    with pytest.raises(ValueError, match="mask_format='rgb'"):
        ds[0]


def test_size_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", _image(10, 12))
    _write(tmp_path / "ann" / "a.png", np.zeros((10, 11), dtype=np.uint8))
    ds = SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b"])
    with pytest.raises(ValueError, match=r"ann/a.png is 11x10 \(WxH\) but image .*a.png is 12x10"):
        ds[0]


def test_small_image_is_padded_to_the_crop(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", np.full((20, 30, 3), 200, dtype=np.uint8))
    _write(tmp_path / "ann" / "a.png", np.ones((20, 30), dtype=np.uint8))
    transform = SegmentationTransform(True, crop_size=64, mean=(0, 0, 0), std=(1, 1, 1), hflip=0.0)
    ds = SegmentationDataset(
        pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b"], transform=transform
    )
    sample = ds[0]
    assert sample["image"].shape == (3, 64, 64) and sample["mask"].shape == (64, 64)
    assert torch.allclose(sample["image"][:, :20, :30], torch.tensor(200 / 255))
    assert (sample["image"][:, 20:, :] == 0).all() and (sample["image"][:, :, 30:] == 0).all()
    assert (sample["mask"][:20, :30] == 1).all()
    assert (sample["mask"][20:, :] == 255).all() and (sample["mask"][:, 30:] == 255).all()


def test_empty_dataset_and_missing_masks(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    with pytest.raises(ValueError, match=r"empty segmentation dataset.*in somewhere"):
        SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a"], source="somewhere")
    _write(tmp_path / "img" / "a.png", _image(2, 2))
    with pytest.raises(FileNotFoundError, match=r"1 of 1 images .* no mask, e.g. .*ann/a.png is missing"):
        pair_folders(tmp_path / "img", tmp_path / "ann")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        pair_folders(tmp_path / "nope", tmp_path / "ann")


def test_bad_configuration_errors() -> None:
    from rsvit.data.segmentation import SegmentationRecord

    records = [SegmentationRecord(Path("a.png"), Path("b.png"))]
    with pytest.raises(ValueError, match="need a palette"):
        SegmentationDataset(records, ["a"], mask_format="rgb")
    with pytest.raises(ValueError, match="2 colours for 3 classes"):
        SegmentationDataset(records, ["a", "b", "c"], palette=PALETTE[:2])
    with pytest.raises(ValueError, match="collides"):
        SegmentationDataset(records, ["a", "b"], ignore_index=1)


def test_file_list(tmp_path: Path) -> None:
    _write(tmp_path / "x" / "a.png", _image(4, 4))
    _write(tmp_path / "y" / "a.png", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "list.txt").write_text("# image mask\nx/a.png y/a.png\n\nx/a.png\n")
    records = read_file_list(tmp_path / "list.txt")
    assert [(r.image.name, r.mask.name if r.mask else None) for r in records] == [
        ("a.png", "a.png"),
        ("a.png", None),
    ]
    (tmp_path / "bad.txt").write_text("x/a.png y/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.txt:1: file not found"):
        read_file_list(tmp_path / "bad.txt")


def test_pad_collate_pads_with_ignore() -> None:
    a = {"image": torch.ones(3, 2, 3), "mask": torch.zeros(2, 3, dtype=torch.long), "path": "a"}
    b = {"image": torch.ones(3, 4, 2), "mask": torch.ones(4, 2, dtype=torch.long), "path": "b"}
    batch = pad_collate([a, b], ignore_index=255)
    assert batch["image"].shape == (2, 3, 4, 3)
    assert batch["size"].tolist() == [[2, 3], [4, 2]]
    assert (batch["mask"][0, 2:] == 255).all() and (batch["mask"][1, :, 2:] == 255).all()
    assert (batch["image"][0, :, 2:] == 0).all()


def test_plot_returns_figure(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "a.png", _image(8, 8))
    _write(tmp_path / "ann" / "a.png", np.zeros((8, 8), dtype=np.uint8))
    ds = SegmentationDataset(pair_folders(tmp_path / "img", tmp_path / "ann"), ["a", "b"])
    sample = ds[0]
    fig = ds.plot(sample, prediction=torch.ones(8, 8, dtype=torch.long))
    assert len(fig.axes) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("n", [1, 6, 20, 21, 150])
def test_default_palette_gives_distinct_valid_colours(n):
    from rsvit.viz.palettes import default_palette

    colours = default_palette(n)
    assert len(colours) == n and len(set(colours)) == n
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)
