"""Split generation: deterministic, stratified, seeded, protocol ratios, files readable back."""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rsvit.data.classification.datasets import FolderSceneDataset, LabelFileSceneDataset, read_label_file
from rsvit.data.classification.splits import (
    PROTOCOLS,
    add_split_arguments,
    run_split,
    stratified_split,
    write_split,
)


def _tree(root, counts):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(root / name / f"{name}{i:03d}.png")
    return root


def _labels(n_per_class, classes):
    labels = [c for c in range(classes) for _ in range(n_per_class)]
    names = [f"c{c}_{i:04d}.jpg" for c in range(classes) for i in range(n_per_class)]
    return labels, names


@pytest.mark.parametrize(
    ("protocol", "per_class", "expected_train"),
    [
        ("ucm_82", 100, 80),
        ("aid_28", 220, 44),
        ("aid_55", 220, 110),
        ("nwpu_19", 700, 70),
        ("nwpu_28", 700, 140),
    ],
)
def test_protocol_ratios_per_class(protocol, per_class, expected_train):
    labels, names = _labels(per_class, 3)
    train, valid = stratified_split(labels, names, PROTOCOLS[protocol].train_fraction, 0, ["a", "b", "c"])
    assert Counter(labels[i] for i in train) == {0: expected_train, 1: expected_train, 2: expected_train}
    assert Counter(labels[i] for i in valid) == dict.fromkeys(range(3), per_class - expected_train)
    assert not set(train) & set(valid) and len(train) + len(valid) == len(labels)


def test_split_is_deterministic_seeded_and_order_independent():
    labels, names = _labels(50, 4)
    classes = ["a", "b", "c", "d"]
    first = stratified_split(labels, names, 0.2, 7, classes)
    assert stratified_split(labels, names, 0.2, 7, classes) == first
    assert stratified_split(labels, names, 0.2, 8, classes) != first
    # The same images listed in another order give the same images on each side.
    order = np.random.default_rng(1).permutation(len(labels))
    train, _ = stratified_split([labels[i] for i in order], [names[i] for i in order], 0.2, 7, classes)
    assert sorted(names[order[i]] for i in train) == sorted(names[i] for i in first[0])


def test_classes_are_split_independently():
    labels, names = _labels(30, 2)
    train_ab, _ = stratified_split(labels, names, 0.5, 3, ["a", "b"])
    # Dropping class 1 leaves class 0's split untouched (its seed depends on its own name only).
    train_a, _ = stratified_split(labels[:30], names[:30], 0.5, 3, ["a", "b"])
    assert [i for i in train_ab if labels[i] == 0] == train_a


def test_small_classes_keep_one_image_on_each_side():
    train, valid = stratified_split([0, 0, 1, 1, 1], list("abcde"), 0.1, 0, ["x", "y"])
    assert Counter([0, 0, 1, 1, 1][i] for i in train) == {0: 1, 1: 1}
    assert len(valid) == 3
    with pytest.raises(ValueError, match="train_fraction"):
        stratified_split([0], ["a"], 1.0, 0, ["x"])


def test_written_split_files_read_back(tmp_path):
    root = _tree(tmp_path / "data", {"beach": 10, "airport": 10, "forest": 5})
    dataset = FolderSceneDataset(root)
    files = write_split(dataset, root, tmp_path / "splits", 0.8, seed=0, tag="82", split_id=3)
    assert files.train.name == "train_labels_82_3.txt" and files.valid.name == "valid_labels_82_3.txt"
    assert (files.num_train, files.num_valid) == (20, 5)
    items, classes = read_label_file(files.train)
    assert classes == ["airport", "beach", "forest"]
    assert items[0][0].startswith("airport/")
    train = LabelFileSceneDataset(root, files.train, image_dir=".")
    valid = LabelFileSceneDataset(root, files.valid, image_dir=".", classes=train.classes)
    assert len(train) == 20 and len(valid) == 5
    assert not {r.path for r in train.records} & {r.path for r in valid.records}
    again = write_split(dataset, root, tmp_path / "again", 0.8, seed=0, tag="82", split_id=3)
    assert again.train.read_text() == files.train.read_text()
    assert not [p for p in (tmp_path / "splits").iterdir() if p.name.startswith(".")]


def test_split_command(tmp_path, capsys):
    root = _tree(tmp_path / "aid", {"a": 10, "b": 10})
    parser = add_split_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(root), "--protocol", "aid_28", "--seed", "1", "--split-id", "2"])
    assert run_split(args) == 0
    out = capsys.readouterr().out
    assert "train: 4 images" in out and "valid: 16 images" in out
    assert (root / "train_labels_28_2.txt").is_file() and (root / "valid_labels_28_2.txt").is_file()
    args = parser.parse_args([str(root), "--train-fraction", "0.5", "--out", str(tmp_path / "o")])
    assert run_split(args) == 0
    assert (tmp_path / "o" / "train_labels_55_0.txt").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args([str(root)])  # a protocol or a fraction is required


def test_rsscn7_dev_half_split(data_dir):
    dataset = FolderSceneDataset(data_dir / "rsscn7-dev")
    names = [r.path.name for r in dataset.records]
    train, valid = stratified_split(dataset.targets, names, 0.5, 0, dataset.classes)
    assert Counter(dataset.targets[i] for i in train) == dict.fromkeys(range(7), 50)
    assert len(valid) == 350
