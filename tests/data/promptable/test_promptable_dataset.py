"""Promptable samples of the real Dubai tiles: SAM's input frame, padding, fixed evaluation prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsvit.data.promptable import PROMPT_KEYS, promptable_collate
from rsvit.datamodules.promptable import PromptableDataModule
from rsvit.models.promptable.transforms import ResizeLongestSide

SIZE = 96


@pytest.fixture(scope="module")
def datamodule(data_dir: Path) -> PromptableDataModule:
    dm = PromptableDataModule(
        str(data_dir / "dubai-seg"),
        dataset="dubai",
        train_split=[2],
        val_split=[2],
        img_size=SIZE,
        skip_classes=["unlabeled"],
        min_area=8,
        max_objects=5,
        num_negative=2,
        num_workers=0,
    )
    dm.setup("fit")
    return dm


def test_samples_are_in_sams_input_frame(datamodule: PromptableDataModule) -> None:
    sample = datamodule.dataset("val")[0]
    h, w = sample["size"].tolist()
    assert (h, w) == ResizeLongestSide(SIZE).input_size((544, 509))  # Tile 2 images are 509 x 544
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert sample["image"][:, :, w:].abs().sum() == 0 and sample["image"].max() > 50  # 0-255, padded with 0
    labels = sample["labels"]
    assert (labels[:, w:] == 255).all() and (labels[:h, :w] != 255).any()
    masks = sample["masks"]
    assert 1 <= len(masks) <= 5 and not masks[:, :, w:].any()
    unlabeled = datamodule.classes.index("unlabeled")
    assert unlabeled not in sample["classes"].tolist()
    for mask, cls, box in zip(masks, sample["classes"], sample["boxes"], strict=True):
        assert (labels[mask] == cls).all()  # a target is pixels of one class
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    for coords, point_labels, mask in zip(sample["point_coords"], sample["point_labels"], masks, strict=True):
        for (x, y), lab in zip(coords.long().tolist(), point_labels.tolist(), strict=True):
            if lab >= 0:
                assert bool(mask[y, x]) == bool(lab) and labels[y, x] != 255


def test_evaluation_prompts_are_fixed_and_training_prompts_vary(datamodule: PromptableDataModule) -> None:
    val = datamodule.dataset("val")
    first, again = val[1], val[1]
    for key in PROMPT_KEYS:
        assert torch.equal(first[key], again[key]), key
    train = datamodule.dataset("train")
    torch.manual_seed(0)
    draws = [train[1]["noisy_boxes"] for _ in range(3)]
    assert not all(d.shape == draws[0].shape and torch.equal(d, draws[0]) for d in draws[1:])


def test_collate_keeps_prompts_per_image(datamodule: PromptableDataModule) -> None:
    batch = promptable_collate([datamodule.dataset("val")[i] for i in range(2)])
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["labels"].shape == (2, SIZE, SIZE)
    assert isinstance(batch["masks"], list) and len(batch["masks"]) == 2
    assert datamodule.preprocessing()["input_size"] == [3, SIZE, SIZE]


def test_bad_settings_are_refused(data_dir: Path) -> None:
    root = str(data_dir / "dubai-seg")
    with pytest.raises(ValueError, match="unknown class 'roads'"):
        PromptableDataModule(root, dataset="dubai", skip_classes=["roads"])
    with pytest.raises(ValueError, match="no class"):
        PromptableDataModule(root, dataset="dubai", target_classes=["road"], skip_classes=["road"])
    dm = PromptableDataModule(root, dataset="dubai", train_split=[2], val_split=[2], img_size=SIZE)
    with pytest.raises(ValueError, match="segment-raster"):
        dm.dataset("predict")
