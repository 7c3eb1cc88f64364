"""SceneDataModule: split files and on-the-fly splits agree, loaders, bad input at the edges."""

from __future__ import annotations

import pytest
import torch
from test_classification_lightning import make_tree

from rsvit.data.classification.datasets import FolderSceneDataset, LabelFileError
from rsvit.data.classification.splits import write_split
from rsvit.datamodules import SceneDataModule


def _module(root, **kwargs):
    defaults = {"batch_size": 4, "num_workers": 0, "input_size": 16, "auto_augment": None}
    return SceneDataModule(str(root), **{**defaults, **kwargs})


def test_split_files_and_on_the_fly_split_pick_the_same_images(tmp_path):
    root = make_tree(tmp_path / "data", per_class=6)
    files = write_split(FolderSceneDataset(root), root, root, 0.5, seed=4, tag="55", split_id=0)
    from_files = _module(root, train_file=files.train.name, val_file=files.valid.name, image_dir=".")
    on_the_fly = _module(root, layout="folders", train_fraction=0.5, split_seed=4)
    for dm in (from_files, on_the_fly):
        dm.setup("fit")
    assert from_files.classes == on_the_fly.classes == ["blue", "green", "red"]

    def paths(dm, stage):
        ds = dm.dataset(stage)
        base = getattr(ds, "dataset", ds)
        indices = getattr(ds, "indices", range(len(base)))
        return sorted(str(base.records[i].path) for i in indices)

    assert paths(from_files, "train") == paths(on_the_fly, "train")
    assert paths(from_files, "val") == paths(on_the_fly, "val") == paths(on_the_fly, "test")
    batch = next(iter(on_the_fly.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].dtype == torch.int64
    assert len(on_the_fly.train_dataloader()) == 2  # 9 images, whole batches of 4
    assert len(on_the_fly.val_dataloader()) == 3


def test_unknown_class_in_validation_file_names_file_and_line(tmp_path):
    root = make_tree(tmp_path / "data", per_class=2)
    (root / "train.txt").write_text("red/red_0.png red 0\ngreen/green_0.png green 1\n")
    (root / "valid.txt").write_text("red/red_1.png red 0\nblue/blue_1.png blue 2\n")
    dm = _module(root, train_file="train.txt", val_file="valid.txt", image_dir=".")
    assert dm.classes == ["red", "green"]
    with pytest.raises(LabelFileError, match=r"valid\.txt:2: unknown class 'blue'"):
        dm.setup("fit")


def test_unreadable_images_skipped_or_raised_through_the_loader(tmp_path):
    root = make_tree(tmp_path / "data", per_class=4)
    skipping = _module(root, layout="folders", train_fraction=0.5, on_error="skip", eval_batch_size=12)
    val = skipping.dataset("val")
    broken = val.dataset.records[val.indices[0]].path  # a held-out image
    broken.write_bytes(b"not a png")
    batches = list(skipping.val_dataloader())
    assert sum(b["image"].shape[0] for b in batches) == 5  # 6 held out, 1 unreadable
    assert str(broken) not in batches[0]["path"]
    raising = _module(root, layout="folders", train_fraction=0.5, eval_batch_size=12)
    with pytest.raises(OSError, match=f"cannot read image .*{broken.name}"):
        list(raising.val_dataloader())


def test_band_settings_are_checked(tmp_path):
    root = make_tree(tmp_path / "data", per_class=2)
    with pytest.raises(ValueError, match="mean and std need 4 values"):
        _module(root, layout="folders", in_chans=4)
    four = _module(root, layout="folders", in_chans=4, mean=[0.5] * 4, std=[0.2] * 4)
    with pytest.raises(ValueError, match="has 3 bands but the model expects 4"):
        next(iter(four.train_dataloader()))
    with pytest.raises(ValueError, match="needs train_file"):
        SceneDataModule(str(root))


def test_predict_folder_and_empty_folder(tmp_path):
    root = make_tree(tmp_path / "data", per_class=2)
    dm = _module(root, layout="folders", predict_path=str(root / "red"))
    batch = next(iter(dm.predict_dataloader()))
    assert batch["label"].tolist() == [-1, -1] and len(batch["path"]) == 2
    (tmp_path / "nothing").mkdir()
    empty = _module(root, layout="folders", predict_path=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="no images found"):
        empty.predict_dataloader()
