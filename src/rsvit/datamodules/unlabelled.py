"""``UnlabelledDataModule``: images without labels, for distillation from imagery alone.

Remote-sensing users hold far more imagery than labels; a teacher's outputs are the targets, so any
pixels will do. Two sources:

* a folder, searched recursively for images (JPEG, PNG, GeoTIFF ...); each image is resized to
  ``input_size``. A seeded ``val_fraction`` of the files is held out for validation;
* a raster (GeoTIFF): ``train_windows`` square windows of ``window_size`` pixels at random positions
  drawn once with ``seed``, and ``val_windows`` further ones from another stream of the same seed.

Samples are ``{"image": float (C, H, W) normalised, "id": str}``; the id (relative file name, or
``name:row,col`` of the window) names the same pixels every epoch, so the teacher outputs of a sample
may be cached (:mod:`rsvit.tasks.distillation_cache`). The transforms are deterministic for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset

from rsvit.data.classification.datasets import find_images
from rsvit.data.io import RASTER_SUFFIXES, read_image, to_unit_range

__all__ = [
    "ImagePreparation",
    "RasterWindowDataset",
    "UnlabelledDataModule",
    "UnlabelledImageDataset",
    "random_corners",
]

IMAGENET_MEAN = IMAGENET_DEFAULT_MEAN
IMAGENET_STD = IMAGENET_DEFAULT_STD


@dataclass(frozen=True)
class ImagePreparation:
    """Turns a read ``(C, H, W)`` array into the model input.

    Unit range, grey repeated to ``in_chans``, bilinear resize to ``size``, normalisation; ``bands``
    (1-based) are the ones read.
    """

    size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    in_chans: int = 3
    bands: tuple[int, ...] | None = None

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(to_unit_range(array)))
        if image.shape[0] == 1 and self.in_chans > 1:
            image = image.expand(self.in_chans, -1, -1)
        if image.shape[0] != self.in_chans:
            raise ValueError(
                f"image has {image.shape[0]} bands, the model takes {self.in_chans}: set bands or in_chans"
            )
        if image.shape[1:] != (self.size, self.size):
            image = F.interpolate(
                image[None], size=(self.size, self.size), mode="bilinear", align_corners=False
            )[0]
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (image - mean) / std

    @property
    def band_list(self) -> list[int] | None:
        return list(self.bands) if self.bands is not None else None


class UnlabelledImageDataset(Dataset):
    """Image files without labels (see the module docstring); ids are paths relative to ``root``."""

    def __init__(self, files: Sequence[Path], root: Path, prepare: ImagePreparation) -> None:
        self.files, self.root, self.prepare = list(files), root, prepare

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image = self.prepare(read_image(path, self.prepare.band_list))
        return {"image": image, "id": path.relative_to(self.root).as_posix()}


class RasterWindowDataset(Dataset):
    """Square ``window_size`` windows of one raster at fixed top-left corners ``(row, col)``."""

    def __init__(
        self, path: Path, corners: Sequence[tuple[int, int]], window_size: int, prepare: ImagePreparation
    ) -> None:
        self.path, self.corners, self.window_size, self.prepare = path, list(corners), window_size, prepare
        self._src: Any = None  # opened on first read, in the worker that reads

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from rasterio.windows import Window

        if self._src is None:
            import rasterio

            self._src = rasterio.open(self.path)
        row, col = self.corners[index]
        window = Window(col, row, self.window_size, self.window_size)
        image = self.prepare(self._src.read(self.prepare.band_list, window=window))
        return {"image": image, "id": f"{self.path.name}:{row},{col},{self.window_size}"}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_src": None}  # an open dataset does not travel to worker processes


def random_corners(
    height: int, width: int, size: int, count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``count`` top-left corners of ``size`` windows inside a ``height`` x ``width`` raster."""
    if size > min(height, width):
        raise ValueError(f"window_size {size} exceeds the raster ({height} x {width}); choose a smaller one")
    rows = rng.integers(0, height - size + 1, size=count)
    cols = rng.integers(0, width - size + 1, size=count)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


class UnlabelledDataModule(L.LightningDataModule):
    """Unlabelled images from a folder or windows of a raster (see the module docstring).

    Args:
        path: a folder of images (recursive) or one raster file.
        input_size: side of the model input.
        mean, std: normalisation in [0, 1] units, one per band (the teacher's).
        in_chans: bands the model takes; bands: 1-based bands to read.
        val_fraction: folder: share of the files held out for validation.
        window_size: raster: window side in pixels (default ``input_size``).
        train_windows, val_windows: raster: windows per set.
        seed: the draw of held-out files and of window positions.
        batch_size, eval_batch_size, num_workers: loaders.
    """

    def __init__(
        self,
        path: str,
        input_size: int = 224,
        mean: list[float] = list(IMAGENET_MEAN),  # noqa: B006 - shown as the default by the CLI
        std: list[float] = list(IMAGENET_STD),  # noqa: B006
        in_chans: int = 3,
        bands: list[int] | None = None,
        val_fraction: float = 0.1,
        window_size: int | None = None,
        train_windows: int = 1000,
        val_windows: int = 100,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need {in_chans} values (in_chans), got {len(mean)} and {len(std)}"
            )
        self.save_hyperparameters()
        self.datasets: dict[str, Dataset] = {}

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of its input (for exported weights)."""
        hp = self.hparams
        return {
            "input_size": [int(hp.in_chans), int(hp.input_size), int(hp.input_size)],
            "mean": [float(v) for v in hp.mean],
            "std": [float(v) for v in hp.std],
            "bands": list(hp.bands) if hp.bands is not None else None,
        }

    def _prepare(self) -> ImagePreparation:
        hp = self.hparams
        bands = tuple(hp.bands) if hp.bands is not None else None
        return ImagePreparation(int(hp.input_size), tuple(hp.mean), tuple(hp.std), int(hp.in_chans), bands)

    def _folder_sets(self, root: Path) -> dict[str, Dataset]:
        files = find_images(root, recursive=True)
        if not files:
            raise FileNotFoundError(f"no images below {root}")
        order = np.random.default_rng(self.hparams.seed).permutation(len(files))
        n_val = round(self.hparams.val_fraction * len(files))
        val = sorted(files[i] for i in order[:n_val])
        train = sorted(files[i] for i in order[n_val:])
        return {
            "train": UnlabelledImageDataset(train, root, self._prepare()),
            "val": UnlabelledImageDataset(val, root, self._prepare()),
        }

    def _raster_sets(self, path: Path) -> dict[str, Dataset]:
        import rasterio

        hp = self.hparams
        size = int(hp.window_size or hp.input_size)
        with rasterio.open(path) as src:
            height, width = src.height, src.width
        train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(hp.seed).spawn(2))
        return {
            "train": RasterWindowDataset(
                path, random_corners(height, width, size, hp.train_windows, train_rng), size, self._prepare()
            ),
            "val": RasterWindowDataset(
                path, random_corners(height, width, size, hp.val_windows, val_rng), size, self._prepare()
            ),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        path = Path(self.hparams.path)
        if path.is_dir():
            self.datasets = self._folder_sets(path)
        elif path.is_file() and path.suffix.lower() in RASTER_SUFFIXES:
            self.datasets = self._raster_sets(path)
        else:
            raise FileNotFoundError(
                f"{path} is neither a folder of images nor a raster ({sorted(RASTER_SUFFIXES)})"
            )

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        batch = hp.batch_size if stage == "train" else (hp.eval_batch_size or hp.batch_size)
        return DataLoader(
            self.datasets[stage],
            batch_size=batch,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
