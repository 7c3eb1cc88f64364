"""Deterministic, stratified, seeded train/validation splits written as RSP label files.

A run is reproducible from its split files alone: the files list every image with its class, in the
RSP format ``<file name> <class name> <class id>``, under the names RSP's code reads
(``train_labels_{ratio}_{split}.txt`` / ``valid_labels_{ratio}_{split}.txt``).

The split of each class depends only on the seed, the class name and the sorted file names of that
class, so adding a class or reordering the disk listing never changes the others.

Published protocols (train:test): UCM 8:2, AID 2:8 and 5:5, NWPU-RESISC45 1:9 and 2:8.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rsvit.utils.atomic import atomic_write_text

if TYPE_CHECKING:  # the datasets import torch: the split command's help must not
    from rsvit.data.classification.datasets import SceneDataset

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "SplitFiles",
    "add_split_arguments",
    "run_split",
    "stratified_split",
    "write_label_file",
    "write_split",
]


@dataclass(frozen=True)
class Protocol:
    """A published split: the fraction of each class used for training and the file-name tag."""

    dataset: str
    train_fraction: float
    tag: str


PROTOCOLS: dict[str, Protocol] = {
    "ucm_82": Protocol("UC Merced", 0.8, "82"),
    "aid_28": Protocol("AID", 0.2, "28"),
    "aid_55": Protocol("AID", 0.5, "55"),
    "nwpu_19": Protocol("NWPU-RESISC45", 0.1, "19"),
    "nwpu_28": Protocol("NWPU-RESISC45", 0.2, "28"),
}


def _class_seed(seed: int, class_name: str) -> list[int]:
    """A seed sequence of (seed, class) that is stable across Python runs (no ``hash()``)."""
    digest = hashlib.sha256(class_name.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def stratified_split(
    labels: Sequence[int],
    names: Sequence[str],
    train_fraction: float,
    seed: int,
    classes: Sequence[str],
) -> tuple[list[int], list[int]]:
    """Indices of the training and validation parts, ``round(n * fraction)`` per class.

    Every class with at least two images keeps one image on each side. ``names`` (file names) fix the
    order inside a class before shuffling, so the result does not depend on the listing order.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if len(labels) != len(names):
        raise ValueError("labels and names differ in length")
    train: list[int] = []
    valid: list[int] = []
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    for label, members in sorted(by_class.items()):
        members = sorted(members, key=lambda i: names[i])
        rng = np.random.default_rng(_class_seed(seed, classes[label]))
        order = [members[j] for j in rng.permutation(len(members))]
        n_train = int(np.floor(len(order) * train_fraction + 0.5))
        if len(order) >= 2:
            n_train = min(max(n_train, 1), len(order) - 1)
        train.extend(order[:n_train])
        valid.extend(order[n_train:])
    return sorted(train), sorted(valid)


def write_label_file(path: str | os.PathLike[str], entries: Sequence[tuple[str, str, int]]) -> Path:
    """Writes ``(file name, class name, class id)`` lines atomically; names may not contain spaces."""
    path = Path(path)
    lines = []
    for name, class_name, class_id in entries:
        if any(ch.isspace() for ch in name + class_name):
            raise ValueError(f"{name!r} / {class_name!r}: the label-file format cannot hold white space")
        lines.append(f"{name} {class_name} {class_id}\n")
    atomic_write_text(path, "".join(lines))
    return path


@dataclass(frozen=True)
class SplitFiles:
    """The two label files :func:`write_split` wrote and how many images each lists."""

    train: Path
    valid: Path
    num_train: int
    num_valid: int


def write_split(
    dataset: SceneDataset,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    train_fraction: float,
    seed: int,
    tag: str,
    split_id: int | str = 0,
) -> SplitFiles:
    """Splits ``dataset`` and writes ``{train,valid}_labels_{tag}_{split_id}.txt`` into ``out_dir``.

    File names are written relative to ``root`` (use ``image_dir="."`` with root when reading them back
    through :class:`~rsvit.data.classification.datasets.LabelFileSceneDataset`).
    """
    root = Path(root)
    names = [r.path.relative_to(root).as_posix() for r in dataset.records]
    labels = dataset.targets
    train, valid = stratified_split(labels, names, train_fraction, seed, dataset.classes)
    out_dir = Path(out_dir)
    suffix = f"_{tag}_{split_id}" if tag else f"_{split_id}"

    def entries(indices: list[int]) -> list[tuple[str, str, int]]:
        return [(names[i], dataset.classes[labels[i]], labels[i]) for i in indices]

    train_path = write_label_file(out_dir / f"train_labels{suffix}.txt", entries(train))
    valid_path = write_label_file(out_dir / f"valid_labels{suffix}.txt", entries(valid))
    return SplitFiles(train_path, valid_path, len(train), len(valid))


# ---------------------------------------------------------------------------------------------
# Command line: ``rsvit split``
# ---------------------------------------------------------------------------------------------


def add_split_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit split``."""
    parser.add_argument("root", type=Path, help="dataset folder (one folder per class, or MillionAID tree)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the split files (default: ROOT)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--protocol", choices=sorted(PROTOCOLS), help="a published train:test protocol")
    group.add_argument("--train-fraction", type=float, help="custom fraction of each class for training")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    parser.add_argument("--split-id", default="0", help="the {split} number in the file names (default 0)")
    parser.add_argument(
        "--layout",
        choices=("folders", "millionaid"),
        default="folders",
        help="dataset layout (default folders)",
    )
    parser.add_argument(
        "--tag", default=None, help="ratio tag in the file names (default: from the protocol)"
    )
    return parser


def run_split(args: argparse.Namespace) -> int:
    """Writes the split files and prints their sizes."""
    from rsvit.data.classification.datasets import FolderSceneDataset, MillionAIDDataset

    root = Path(args.root)
    dataset_cls = MillionAIDDataset if args.layout == "millionaid" else FolderSceneDataset
    dataset = dataset_cls(root, num_bands=None)
    if args.protocol:
        protocol = PROTOCOLS[args.protocol]
        fraction, tag = protocol.train_fraction, protocol.tag
    else:
        fraction = args.train_fraction
        tag = (
            f"{round(fraction * 10)}{round((1 - fraction) * 10)}"
            if (fraction * 10).is_integer()
            else "custom"
        )
    if args.tag is not None:
        tag = args.tag
    files = write_split(dataset, root, args.out or root, fraction, args.seed, tag, args.split_id)
    print(f"{len(dataset.classes)} classes, {len(dataset)} images")
    print(f"train: {files.num_train} images -> {files.train}")
    print(f"valid: {files.num_valid} images -> {files.valid}")
    return 0
