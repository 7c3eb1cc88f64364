"""Bitemporal change-detection data: real LEVIR-CD/WHU-CD samples, error cases, cropping, joint transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.data.change import (
    ChangeDataError,
    ChangeDetectionDataset,
    ChangeLabelError,
    MissingPartnerError,
    crop_tiles,
    read_change_label,
)
from rsvit.data.change.transforms import ChangeTransform


@pytest.fixture(scope="module")
def levir(data_dir: Path) -> Path:
    return data_dir / "levir-cd-samples"


@pytest.fixture(scope="module")
def whu(data_dir: Path) -> Path:
    return data_dir / "whu-cd-tiles"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pair(root: Path, name: str, size: tuple[int, int] = (8, 8), label: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(0)
    _save(root / "A" / f"{name}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    _save(root / "B" / f"{name}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    if label is None:
        label = np.zeros(size, dtype=np.uint8)
        label[: size[0] // 2] = 255
    _save(root / "label" / f"{name}.png", label)


# --- real data ---------------------------------------------------------------------------------


def test_levir_list_file_split(levir: Path) -> None:
    ds = ChangeDetectionDataset(levir, split="demo")
    assert ds.layout == "levir"
    listed = (levir / "list" / "demo.txt").read_text().split()
    assert len(ds) == 7 and ds.names == [Path(n).stem for n in listed]
    changed = 0
    for sample in ds:
        assert set(sample) == {"image_a", "image_b", "mask", "path"}
        assert sample["image_a"].shape == sample["image_b"].shape == (3, 256, 256)
        assert sample["image_a"].dtype == torch.float32
        assert float(sample["image_a"].min()) >= 0.0 and float(sample["image_b"].max()) <= 1.0
        assert sample["mask"].shape == (256, 256) and sample["mask"].dtype == torch.int64
        assert set(sample["mask"].unique().tolist()) <= {0, 1}
        changed += int(sample["mask"].sum())
        assert Path(sample["path"]).parent.name == "A"
    assert changed > 0


def test_levir_values_match_the_stored_files(levir: Path) -> None:
    names = sorted(p.stem for p in (levir / "label").glob("*.png"))
    ds = ChangeDetectionDataset(levir, names=names)
    assert len(ds) == 11
    i = ds.names.index("train_386_0512_0768")  # the README's no-change sample
    assert int(ds[i]["mask"].sum()) == 0
    j = ds.names.index("test_2_0000_0000")
    sample = ds[j]
    stored = np.asarray(Image.open(levir / "label" / "test_2_0000_0000.png"))
    assert torch.equal(sample["mask"], torch.from_numpy((stored == 255).astype(np.int64)))
    raw_b = np.asarray(Image.open(levir / "B" / "test_2_0000_0000.png")).transpose(2, 0, 1)
    assert torch.allclose(sample["image_b"], torch.from_numpy(raw_b / 255.0).float())


def test_levir_unlabelled_pair_is_a_missing_partner(levir: Path) -> None:
    # test_113_0256 is in A/ and B/ but has no label: scanning the folders must say so
    with pytest.raises(MissingPartnerError, match=r"test_113_0256: no file in label/") as err:
        ChangeDetectionDataset(levir)
    assert "A/test_113_0256.png" in str(err.value)


def test_levir_real_pair_of_different_heights(levir: Path) -> None:
    ds = ChangeDetectionDataset(levir, names=["test_113_0256"], labels=False)
    assert len(ds) == 1
    with pytest.raises(ChangeDataError, match=r"768x384.*768x383") as err:
        ds[0]
    assert "A/test_113_0256.png" in str(err.value) and "B/test_113_0256.png" in str(err.value)


def test_whu_layout(whu: Path) -> None:
    ds = ChangeDetectionDataset(whu)
    assert ds.layout == "whu" and len(ds) == 3
    assert ds.names == ["000121", "000213", "000241"]
    sample = ds[0]
    assert sample["image_a"].shape == sample["image_b"].shape == (3, 1024, 1024)
    assert Path(sample["path"]).parent.name == "prev"
    assert sample["mask"].shape == (1024, 1024)
    assert set(sample["mask"].unique().tolist()) == {0, 1}


def test_crop_whu_tile_into_16_crops_that_reassemble(whu: Path, tmp_path: Path) -> None:
    names = crop_tiles(whu, tmp_path, size=256, names=["000121"], list_name="crops")
    assert len(names) == 16 and names[0] == "000121_0000_0000" and names[-1] == "000121_0768_0768"
    for folder in ("prev", "curr", "label"):
        tile = np.asarray(Image.open(whu / folder / "000121.png"))
        rebuilt = np.zeros_like(tile)
        for name in names:
            y, x = (int(v) for v in name.split("_")[1:])
            crop = np.asarray(Image.open(tmp_path / folder / f"{name}.png"))
            assert crop.shape[:2] == (256, 256)
            rebuilt[y : y + 256, x : x + 256] = crop
        assert np.array_equal(rebuilt, tile), folder
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    ds = ChangeDetectionDataset(tmp_path, split="crops")
    assert ds.layout == "whu" and len(ds) == 16 and ds[5]["mask"].shape == (256, 256)


def test_crop_refuses_sides_not_a_multiple(tmp_path: Path) -> None:
    _pair(tmp_path / "src", "t", size=(20, 24))
    with pytest.raises(ChangeDataError, match="not a multiple of the crop size 16"):
        crop_tiles(tmp_path / "src", tmp_path / "dst", size=16)


# --- synthetic error cases -----------------------------------------------------------------------


def test_missing_partners_are_all_named(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    _pair(tmp_path, "no_b")
    (tmp_path / "B" / "no_b.png").unlink()
    _save(tmp_path / "label" / "orphan.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(MissingPartnerError) as err:
        ChangeDetectionDataset(tmp_path)
    msg = str(err.value)
    assert "2 incomplete pair(s)" in msg
    assert "no_b: no file in B/" in msg and "A/no_b.png" in msg
    assert "orphan: no file in A/, B/" in msg and "label/orphan.png" in msg


def test_list_file_names_unknown_pair(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "train.txt").write_text("ok.png\n\nghost.png\n")
    with pytest.raises(MissingPartnerError, match=r"ghost: no file in A/, B/, label/.*list.train\.txt"):
        ChangeDetectionDataset(tmp_path, split="train")
    (tmp_path / "list" / "val.txt").write_text("ok.png\n")
    assert ChangeDetectionDataset(tmp_path, split="val").names == ["ok"]
    with pytest.raises(MissingPartnerError, match="list file not found"):
        ChangeDetectionDataset(tmp_path, split="test")


def test_synthetic_size_mismatches(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    _pair(tmp_path, "dates", size=(8, 8))
    _save(tmp_path / "B" / "dates.png", np.zeros((8, 9, 3), np.uint8))
    _pair(tmp_path, "mask", size=(8, 8), label=np.zeros((6, 8), np.uint8))
    ds = ChangeDetectionDataset(tmp_path)
    with pytest.raises(ChangeDataError, match=r"dates differ: .*A/dates\.png is 8x8 .*B/dates\.png is 9x8"):
        ds[ds.names.index("dates")]
    with pytest.raises(ChangeDataError, match=r"label .*label/mask\.png is 8x6"):
        ds[ds.names.index("mask")]
    with pytest.raises(ChangeDataError, match=r"2 bad pair\(s\)"):
        ds.validate()
    ChangeDetectionDataset(tmp_path, names=["ok"]).validate()


def test_bad_label_values_are_reported(tmp_path: Path) -> None:
    label = np.zeros((8, 8), np.uint8)
    label[0, :3] = [128, 255, 7]
    _pair(tmp_path, "jpeg_like", label=label)
    ds = ChangeDetectionDataset(tmp_path)
    with pytest.raises(ChangeLabelError, match=r"jpeg_like\.png: label values \[0, 7, 128, 255\] found"):
        ds[0]


def test_label_codings(tmp_path: Path) -> None:
    zero_one = np.array([[0, 1], [1, 0]], np.uint8)
    _save(tmp_path / "a.png", zero_one)
    assert read_change_label(tmp_path / "a.png").tolist() == [[0, 1], [1, 0]]
    _save(tmp_path / "b.png", zero_one * 255)
    assert read_change_label(tmp_path / "b.png").tolist() == [[0, 1], [1, 0]]
    mixed = np.array([[0, 1], [255, 0]], np.uint8)
    _save(tmp_path / "c.png", mixed)
    with pytest.raises(ChangeLabelError, match=r"\[0, 1, 255\] found, expected 0/255 or 0/1"):
        read_change_label(tmp_path / "c.png")
    assert read_change_label(tmp_path / "c.png", ignore_value=255).tolist() == [[0, 1], [255, 0]]
    with pytest.raises(ChangeLabelError, match=r"\[0, 255\] found, expected 0/1 with 254 = ignore"):
        read_change_label(tmp_path / "b.png", ignore_value=254)
    _save(tmp_path / "rgb.png", np.stack([zero_one * 255] * 3, -1))
    assert read_change_label(tmp_path / "rgb.png").tolist() == [[0, 1], [1, 0]]
    colours = np.stack([zero_one * 255, zero_one * 0, zero_one * 255], -1)
    _save(tmp_path / "colour.png", colours)
    with pytest.raises(ChangeLabelError, match="bands that differ"):
        read_change_label(tmp_path / "colour.png")


def test_ignore_value_reaches_the_sample(tmp_path: Path) -> None:
    label = np.zeros((8, 8), np.uint8)
    label[0] = 1
    label[-1] = 255
    _pair(tmp_path, "p", label=label)
    mask = ChangeDetectionDataset(tmp_path, ignore_value=255)[0]["mask"]
    assert mask[0].tolist() == [1] * 8 and mask[-1].tolist() == [255] * 8 and int(mask[1:-1].sum()) == 0


# --- joint transform ---------------------------------------------------------------------------


def _coordinate_sample(height: int = 12, width: int = 10) -> dict[str, torch.Tensor | str]:
    """Every pixel encodes its own (row, column): A, B and the mask must move together."""
    index = torch.arange(height * width).reshape(height, width)
    scaled = index.float() / (height * width)
    return {
        "image_a": torch.stack([scaled, scaled * 0.5, torch.zeros_like(scaled)]),
        "image_b": torch.stack([scaled * 0.5, scaled, torch.ones_like(scaled)]),
        "mask": index,
        "path": "synthetic",
    }


def test_joint_transform_keeps_dates_and_mask_aligned() -> None:
    sample = _coordinate_sample()
    n = 12 * 10
    transform = ChangeTransform(crop_size=(8, 6), generator=torch.Generator().manual_seed(1))
    seen = set()
    for _ in range(40):
        out = transform(sample)
        mask = out["mask"]
        assert out["path"] == "synthetic" and mask.dtype == torch.int64
        assert out["image_a"].shape[-2:] == out["image_b"].shape[-2:] == mask.shape
        assert torch.equal((out["image_a"][0] * n).round().long(), mask)
        assert torch.equal((out["image_b"][1] * n).round().long(), mask)
        assert torch.equal(out["image_b"][2], torch.ones_like(out["image_b"][2]))
        rows, cols = mask // 10, mask % 10
        # the output is one contiguous 8x6 window of the input, whatever the orientation
        assert int(rows.max() - rows.min()) + 1 in (8, 6) and int(cols.max() - cols.min()) + 1 in (8, 6)
        assert mask.unique().numel() == 48
        seen.add((tuple(mask.shape), int(mask[0, 0]) - int(mask.min())))
    assert len(seen) >= 4  # flips, rotations and crops actually happened
    assert torch.equal(sample["mask"], torch.arange(n).reshape(12, 10))  # input untouched


def test_photometry_changes_images_only() -> None:
    sample = _coordinate_sample()
    sample["image_b"] = sample["image_a"].clone()
    geometry_off = {"hflip": 0.0, "vflip": 0.0, "rot90": False}
    gen = torch.Generator().manual_seed(3)
    out = ChangeTransform(**geometry_off, brightness=0.4, contrast=0.4, gamma=0.3, generator=gen)(sample)
    assert torch.equal(out["mask"], sample["mask"])
    assert not torch.allclose(out["image_a"], sample["image_a"])
    assert not torch.allclose(out["image_a"], out["image_b"])  # each date gets its own conditions
    assert float(out["image_a"].min()) >= 0.0 and float(out["image_a"].max()) <= 1.0
    same = ChangeTransform(**geometry_off, brightness=0.4, same_photometry=True, generator=gen)(sample)
    assert torch.equal(same["image_a"], same["image_b"])
    norm = ChangeTransform(**geometry_off, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])(sample)
    assert torch.allclose(norm["image_a"], sample["image_a"] * 2 - 1)


def test_transform_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="larger than the sample"):
        ChangeTransform(crop_size=16)(_coordinate_sample())
    with pytest.raises(ValueError, match="probability"):
        ChangeTransform(hflip=1.5)
    with pytest.raises(ValueError, match="both mean and std"):
        ChangeTransform(mean=[0.5])


def test_transform_in_the_dataset(levir: Path) -> None:
    ds = ChangeDetectionDataset(levir, split="demo", transform=ChangeTransform(crop_size=128))
    sample = ds[0]
    assert sample["image_a"].shape == (3, 128, 128) and sample["mask"].shape == (128, 128)
