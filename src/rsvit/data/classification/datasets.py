"""Scene-classification datasets: RSP label files, one-folder-per-class trees and MillionAID.

Every dataset is a plain map-style dataset of ``(file, class index)`` records returning sample dicts
``{"image": Tensor (C, H, W), "label": int, "path": str}``; ``plot(sample)`` draws one. The image is read
with :func:`rsvit.data.io.read_image` (Pillow for JPEG/PNG, rasterio for GeoTIFF), so any size
and band count works; the ``transform`` turns the ``(C, H, W)`` array into the model's tensor.

Band handling (documented, tested): ``num_bands`` is the band count the model expects. A single-band
(grey) image is repeated to ``num_bands`` bands, as Pillow's ``convert("RGB")`` would do; any other
difference is an error naming the file and suggesting ``bands=[...]`` to select bands. Unreadable images
either raise (``on_error="raise"``) or are skipped with a logged warning (``on_error="skip"``): the
sample is then ``None`` and :func:`collate_skip_none` drops it; ``num_skipped`` counts them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from rsvit.data.io import RASTER_SUFFIXES, read_image, to_unit_range
from rsvit.viz.classification import classification_figure

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderSceneDataset",
    "LabelFileError",
    "LabelFileSceneDataset",
    "MillionAIDDataset",
    "SceneDataset",
    "SceneRecord",
    "collate_skip_none",
    "find_images",
    "read_label_file",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", *RASTER_SUFFIXES})

OnError = Literal["raise", "skip"]
Transform = Callable[[np.ndarray], torch.Tensor]


class LabelFileError(ValueError):
    """A label or split file that cannot be used; the message names ``file:line``."""


@dataclass(frozen=True)
class SceneRecord:
    """One labelled image: where it is and which class it belongs to."""

    path: Path
    label: int


def find_images(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Image files below ``folder`` (by suffix), sorted so that every machine sees the same order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _default_transform(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(to_unit_range(array)))


class SceneDataset(Dataset):
    """Labelled images for scene classification.

    Args:
        records: the images and their class indices.
        classes: class names; ``records[i].label`` indexes this list.
        transform: maps the ``(C, H, W)`` array read from disk to the model's tensor (default: scale
            integers to [0, 1] and convert, no resizing).
        bands: 1-based bands to read (e.g. ``[4, 3, 2]`` of a multispectral GeoTIFF).
        num_bands: bands the model expects (see the module docstring); ``None`` accepts any count.
        on_error: ``"raise"`` on unreadable images, or ``"skip"`` them with a warning.
    """

    def __init__(
        self,
        records: Sequence[SceneRecord],
        classes: Sequence[str],
        transform: Transform | None = None,
        bands: Sequence[int] | None = None,
        num_bands: int | None = 3,
        on_error: OnError = "raise",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.records = list(records)
        self.classes = list(classes)
        bad = [r for r in self.records if not -1 <= r.label < len(self.classes)]
        if bad:  # -1 marks an unlabelled image (prediction)
            raise ValueError(f"{bad[0].path}: label {bad[0].label} outside 0..{len(self.classes) - 1}")
        self.transform = transform or _default_transform
        self.bands = list(bands) if bands is not None else None
        self.num_bands = num_bands
        self.on_error = on_error
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        return [r.label for r in self.records]

    def read(self, path: Path) -> np.ndarray:
        """The image as ``(C, H, W)`` with the band rule of the module docstring applied."""
        array = read_image(path, bands=self.bands)
        want = self.num_bands
        if want is not None and array.shape[0] != want:
            if array.shape[0] == 1:
                return np.repeat(array, want, axis=0)
            raise ValueError(
                f"{path} has {array.shape[0]} bands but the model expects {want}; select bands with "
                f"bands=[...] (1-based) or build the model with in_chans={array.shape[0]}"
            )
        return array

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        try:
            array = self.read(record.path)
        except ValueError:
            raise  # band mismatches and bad selections are configuration errors, never skipped
        except Exception as exc:
            if self.on_error == "raise":
                raise OSError(f"cannot read image {record.path}: {exc}") from exc
            self.num_skipped += 1
            log.warning(
                "skipping unreadable image %s (%s); %d skipped so far", record.path, exc, self.num_skipped
            )
            return None
        return {"image": self.transform(array), "label": record.label, "path": str(record.path)}

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount([t for t in self.targets if t >= 0], minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}

    def plot(
        self,
        sample: dict[str, Any],
        prediction: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rgb: Sequence[int] = (0, 1, 2),
    ) -> Any:
        """A matplotlib figure of one sample with its class (and a prediction, if given).

        ``mean``/``std`` undo the normalisation of the transform; ``rgb`` picks the displayed bands.
        """
        image = torch.as_tensor(sample["image"]).detach().float().cpu()
        if mean is not None and std is not None:
            image = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
        label = self.classes[sample["label"]] if sample.get("label", -1) >= 0 else None
        predicted = self.classes[prediction] if prediction is not None else None
        return classification_figure(image, label=label, prediction=predicted, rgb=rgb)


def collate_skip_none(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``default_collate`` without the samples a skipping dataset returned as ``None``."""
    kept = [s for s in batch if s is not None]
    if not kept:
        return None
    return default_collate(kept)


# ---------------------------------------------------------------------------------------------
# RSP label files: "<file name> <class name> <class id>" per line
# ---------------------------------------------------------------------------------------------


def read_label_file(
    path: str | os.PathLike[str], classes: Sequence[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """Parses an RSP label file into ``[(file name, class id)]`` and the class names by id.

    With ``classes`` (e.g. those of the training file or of the dataset), every class name must be one
    of them, at the same id; without, names and ids must agree with each other and ids must run 0..N-1.
    Errors name ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    known = {name: i for i, name in enumerate(classes)} if classes is not None else None
    seen: dict[int, str] = {}
    items: list[tuple[str, int]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{path}:{number}"
            if len(fields) != 3:
                raise LabelFileError(
                    f"{where}: expected '<file name> <class name> <class id>', got {line.strip()!r}"
                )
            name, class_name, raw_id = fields
            try:
                class_id = int(raw_id)
            except ValueError:
                raise LabelFileError(f"{where}: class id {raw_id!r} is not an integer") from None
            if known is not None:
                if class_name not in known:
                    raise LabelFileError(
                        f"{where}: unknown class {class_name!r}; known classes: {', '.join(known)}"
                    )
                if known[class_name] != class_id:
                    raise LabelFileError(
                        f"{where}: class {class_name!r} has id {known[class_name]} in the class list, "
                        f"not {class_id}"
                    )
            elif seen.get(class_id, class_name) != class_name:
                raise LabelFileError(
                    f"{where}: class id {class_id} is {class_name!r} here but {seen[class_id]!r} earlier"
                )
            seen[class_id] = class_name
            items.append((name, class_id))
    if not items:
        raise LabelFileError(f"{path}: no labelled images")
    if classes is not None:
        return items, list(classes)
    names_by_id = [seen.get(i) for i in range(max(seen) + 1)]
    if None in names_by_id or min(seen) < 0:
        missing = [i for i, n in enumerate(names_by_id) if n is None]
        raise LabelFileError(
            f"{path}: class ids must run 0..N-1 (missing {missing}); pass the class list of the training "
            "file to read a subset"
        )
    if len(set(names_by_id)) != len(names_by_id):
        raise LabelFileError(f"{path}: one class name has several ids")
    return items, [str(n) for n in names_by_id]


class LabelFileSceneDataset(SceneDataset):
    """Images listed in an RSP label file (``train_labels*.txt`` / ``valid_labels*.txt``).

    Args:
        root: dataset folder.
        label_file: the label file (relative to ``root`` unless absolute).
        image_dir: folder of the images relative to ``root`` (RSP: ``all_img``); file names in the
            label file may contain sub-folders.
        classes: the class list to check names against (use the training file's for validation files).
        **kwargs: see :class:`SceneDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        label_file: str | os.PathLike[str],
        image_dir: str = "all_img",
        classes: Sequence[str] | None = None,
        check_files: bool = True,
        **kwargs: Any,
    ) -> None:
        root = Path(root)
        label_path = Path(label_file) if Path(label_file).is_absolute() else root / label_file
        items, class_names = read_label_file(label_path, classes)
        images = root / image_dir
        records = [SceneRecord(images / name, label) for name, label in items]
        if check_files:
            missing = [r.path for r in records if not r.path.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{label_path}: {len(missing)} listed images do not exist, e.g. {missing[0]}"
                )
        self.label_file = label_path
        super().__init__(records, class_names, **kwargs)


def _class_folder_records(root: Path, folders: Sequence[Path], names: Sequence[str]) -> list[SceneRecord]:
    records: list[SceneRecord] = []
    for label, (folder, name) in enumerate(zip(folders, names, strict=True)):
        images = find_images(folder, recursive=False)
        if not images:
            raise ValueError(
                f"class folder {folder} ({name!r}) has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        records.extend(SceneRecord(p, label) for p in images)
    return records


class FolderSceneDataset(SceneDataset):
    """One folder per class (UCM, AID, NWPU-RESISC45, RSSCN7): ``root/<class>/<image>``.

    Classes are the sub-folders in sorted order unless ``classes`` fixes them (a named folder that is
    missing is an error); an empty class folder is an error, never a silently smaller dataset.
    """

    def __init__(
        self, root: str | os.PathLike[str], classes: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if classes is None:
            classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not classes:
                raise ValueError(f"{root} has no class folders; expected {root}/<class name>/<image>")
        missing = [c for c in classes if not (root / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"{root} has no folder for the classes {missing}")
        self.root = root
        records = _class_folder_records(root, [root / c for c in classes], list(classes))
        super().__init__(records, list(classes), **kwargs)


class MillionAIDDataset(SceneDataset):
    """MillionAID's class hierarchy: the leaf folders (third level, 51 classes) are the classes.

    Layout ``root/<first level>/<second level>/<third level>/<image>``; where a second-level class has
    no subdivision its folder is the leaf. Class names are the leaf folder names (as in RSP's label files);
    ``hierarchy`` maps each to its path of ancestors.
    """

    def __init__(
        self, root: str | os.PathLike[str], classes: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        leaves: dict[str, Path] = {}
        for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
            has_subfolders = any(q.is_dir() for q in folder.iterdir())
            if has_subfolders:
                continue
            if folder.name in leaves:
                raise ValueError(
                    f"leaf class {folder.name!r} appears twice: {leaves[folder.name]} and {folder}"
                )
            leaves[folder.name] = folder
        if not leaves:
            raise ValueError(f"{root} has no class folders")
        if classes is None:
            classes = sorted(leaves)
        missing = [c for c in classes if c not in leaves]
        if missing:
            raise FileNotFoundError(f"{root} has no leaf folder for the classes {missing}")
        self.root = root
        self.hierarchy = {c: leaves[c].relative_to(root).parts for c in classes}
        records = _class_folder_records(root, [leaves[c] for c in classes], list(classes))
        super().__init__(records, list(classes), **kwargs)
