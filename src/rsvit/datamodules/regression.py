"""``HeightDataModule``: image / height (DSM, nDSM) GeoTIFF pairs for dense regression in Lightning.

Pairs come from explicit ``[image, target]`` lists or from a folder holding ``images/`` and ``targets/``
(names matched by stem, so ``images/a.tif`` pairs with ``targets/a.tif``). Reading goes through
:func:`rsvit.data.regression.datasets.read_height_pair`, so the target is on the image grid and its nodata
pixels are flagged in ``valid``. Pixels where the *image* is nodata (or not finite) are flagged invalid too:
a prediction there is made from fabricated input.

Prediction (``rsvit predict``) reads images alone: ``predict_images`` (a folder, one raster or a list),
by default the images of the test pairs; ``valid`` then flags where the image has data. A run that
only predicts needs no pairs at all.

Training samples are random crops with flips / 90-degree rotations applied jointly to image, target
and valid mask; a crop larger than the image is padded with invalid pixels. Evaluation uses whole
images; a batch of differently sized images is padded (invalid) to the largest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rasterio
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rsvit.data.regression.datasets import (
    HeightKind,
    HeightPairDataset,
    NegativePolicy,
    projected_pixel_size,
    read_height_image,
    read_height_pair,
)
from rsvit.datamodules.base import DenseDataModule

__all__ = ["HeightDataModule", "HeightTransform", "find_height_pairs", "height_collate"]

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
PairsArg = str | Sequence[Sequence[str]] | None
_SPATIAL = ("image", "target", "valid", "image_valid")  # transformed together


def find_height_pairs(
    folder: str | Path, image_dir: str = "images", target_dir: str = "targets"
) -> list[tuple[Path, Path]]:
    """``(image, target)`` paths of ``folder/image_dir`` and ``folder/target_dir`` matched by file stem.

    An image without a target is an error (silently dropping data hides a broken export).
    """
    folder = Path(folder).expanduser()
    images_root, targets_root = folder / image_dir, folder / target_dir
    for p in (images_root, targets_root):
        if not p.is_dir():
            raise FileNotFoundError(f"expected a folder {p} (pairs live in {image_dir}/ and {target_dir}/)")
    targets = {p.stem: p for p in targets_root.iterdir() if p.suffix.lower() in RASTER_SUFFIXES}
    pairs = []
    for image in sorted(p for p in images_root.iterdir() if p.suffix.lower() in RASTER_SUFFIXES):
        if image.stem not in targets:
            raise FileNotFoundError(f"no target for {image} in {targets_root}")
        pairs.append((image, targets[image.stem]))
    if not pairs:
        raise FileNotFoundError(f"no rasters in {images_root}")
    return pairs


class HeightTransform:
    """Joint crop / flip / rotation of ``image``, ``target``, ``valid``, then per-band normalisation.

    Invalid image pixels are set to 0 after normalisation (the band mean), so nodata values such as
    -9999 never reach the network.
    """

    def __init__(
        self,
        train: bool,
        crop_size: int | None = None,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.train = train
        self.crop_size = crop_size
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90
        self.mean = torch.tensor(list(mean), dtype=torch.float32) if mean is not None else None
        self.std = torch.tensor(list(std), dtype=torch.float32) if std is not None else None

    def _crop(self, sample: dict[str, Any]) -> dict[str, Any]:
        size = int(self.crop_size or 0)
        h, w = sample["target"].shape
        ph, pw = max(size - h, 0), max(size - w, 0)
        top, left = random.randint(0, h + ph - size), random.randint(0, w + pw - size)
        out = dict(sample)
        for key in _SPATIAL:
            if key in sample:
                x = sample[key]
                if ph or pw:  # padding is invalid (masks pad with False)
                    x = torch.nn.functional.pad(
                        x, (0, pw, 0, ph), value=False if x.dtype == torch.bool else 0
                    )
                out[key] = x[..., top : top + size, left : left + size]
        return out

    @staticmethod
    def _apply(sample: dict[str, Any], op: Any) -> dict[str, Any]:
        return {**sample, **{k: op(sample[k]) for k in _SPATIAL if k in sample}}

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.train:
            if self.crop_size:
                sample = self._crop(sample)
            if random.random() < self.hflip:
                sample = self._apply(sample, lambda x: x.flip(-1))
            if random.random() < self.vflip:
                sample = self._apply(sample, lambda x: x.flip(-2))
            if random.random() < self.rot90:
                sample = self._apply(sample, lambda x: torch.rot90(x, 1, (-2, -1)))
        image = sample["image"].float()
        if self.mean is not None and self.std is not None:
            image = (image - self.mean[:, None, None]) / self.std[:, None, None]
        image = torch.where(sample["image_valid"], image, 0.0) if "image_valid" in sample else image
        out = {**sample, "image": image.contiguous()}
        out.pop("image_valid", None)
        for key in ("target", "valid"):
            if key in out:
                out[key] = out[key].contiguous()
        return out

    def denormalize(self, image: Tensor) -> Tensor:
        """Undoes the normalisation of ``(..., C, H, W)`` images (for previews)."""
        if self.mean is None or self.std is None:
            return image
        return image * self.std[:, None, None] + self.mean[:, None, None]


class _MaskedHeightDataset(HeightPairDataset):
    """:class:`HeightPairDataset` that also masks image nodata and reports the source path."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, target_path = self.pairs[index]
        pair = read_height_pair(image_path, target_path, **self.read_kwargs)
        image = torch.from_numpy(pair.image.copy())
        image_valid = torch.isfinite(image).all(0) & ~_image_nodata_mask(
            image_path, self.read_kwargs.get("image_bands")
        )
        image = torch.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        valid = torch.from_numpy(pair.valid) & image_valid
        sample = {
            "image": image,
            "image_valid": image_valid,
            "target": torch.from_numpy(pair.target) * valid,
            "valid": valid,
            "path": str(image_path),
        }
        return self.transform(sample) if self.transform is not None else sample


class _HeightImageDataset(Dataset):
    """Images alone for prediction: ``image``, ``valid`` (image has data) and the source ``path``."""

    def __init__(self, paths: Sequence[Path], transform: HeightTransform, image_bands: Sequence[int] | None):
        if not paths:
            raise ValueError("no images to predict")
        self.paths = list(paths)
        self.transform = transform
        self.image_bands = image_bands

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        read = read_height_image(self.paths[index], self.image_bands)
        valid = torch.from_numpy(read.valid)
        sample = {
            "image": torch.from_numpy(read.image),
            "image_valid": valid,
            "valid": valid,
            "path": str(self.paths[index]),
        }
        return self.transform(sample)


def _image_nodata_mask(path: Path, bands: Sequence[int] | None) -> Tensor:
    """``(H, W)`` True where every read band equals the file's nodata value (GDAL's dataset mask)."""
    with rasterio.open(path) as src:
        nodata = src.nodata
        if nodata is None or nodata != nodata:  # unset or NaN (NaN is caught by the finiteness test)
            return torch.zeros(src.height, src.width, dtype=torch.bool)
        raw = src.read(list(bands) if bands is not None else None)
    return torch.from_numpy(raw == raw.dtype.type(nodata)).all(0)


def height_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks samples, padding smaller ones (image 0, target 0, valid False) to the batch's largest size.

    Samples without ``target`` (prediction) give a batch without it.
    """
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)

    def pad(x: Tensor, value: float | bool = 0) -> Tensor:
        ph, pw = h - x.shape[-2], w - x.shape[-1]
        return torch.nn.functional.pad(x, (0, pw, 0, ph), value=value) if ph or pw else x

    batch = {
        "image": torch.stack([pad(s["image"]) for s in samples]),
        "valid": torch.stack([pad(s["valid"], False) for s in samples]),
        "size": torch.tensor([list(s["image"].shape[-2:]) for s in samples]),
        "path": [s.get("path", "") for s in samples],
    }
    if all("target" in s for s in samples):
        batch["target"] = torch.stack([pad(s["target"]) for s in samples])
    return batch


class HeightDataModule(DenseDataModule):
    """Image / height pairs, joint augmentation and loaders (see the module docstring).

    Args:
        pairs: training pairs: a folder (``images/`` + ``targets/``) or a list of ``[image, target]``;
            may be left out when only predicting ``predict_images``.
        val_pairs: validation pairs, same forms (default: the training pairs as whole images).
        test_pairs: test pairs (default: the validation pairs).
        image_dir, target_dir: sub-folder names used when a folder is given.
        crop_size: training crop side in pixels; batch_size: training batch per process.
        eval_batch_size: whole images per evaluation batch.
        hflip, vflip, rot90: augmentation probabilities.
        kind, negative, target_nodata: how heights are read
            (:func:`~rsvit.data.regression.datasets.read_height_pair`).
        image_bands: 1-based bands to read (default all); in_chans: bands the model takes.
        mean, std: per-band normalisation of the image values as read (integer imagery is in [0, 1]).
        reproject: warp targets on another grid onto the image grid.
        predict_images: images to predict (a folder of rasters, one raster or a list; default: the
            images of the test pairs).
        num_workers: loader processes; train_repeats: each training pair this many times per epoch.
    """

    def __init__(
        self,
        pairs: PairsArg = None,
        val_pairs: PairsArg = None,
        test_pairs: PairsArg = None,
        image_dir: str = "images",
        target_dir: str = "targets",
        crop_size: int = 256,
        batch_size: int = 4,
        eval_batch_size: int = 1,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: float = 0.5,
        kind: HeightKind = "ndsm",
        negative: NegativePolicy = "clip",
        target_nodata: float | None = None,
        image_bands: list[int] | None = None,
        in_chans: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        reproject: bool = False,
        num_workers: int = 0,
        train_repeats: int = 1,
        predict_images: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if pairs is None and predict_images is None:
            raise ValueError(
                "HeightDataModule needs training pairs (a folder or [[image, target], ...]), or "
                "predict_images to predict without training data"
            )
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) != in_chans:
                raise ValueError(f"{name} needs {in_chans} values (in_chans), got {len(values)}")
        if train_repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {train_repeats}")
        self.in_chans = int(in_chans)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.train_transform = HeightTransform(True, crop_size, hflip, vflip, rot90, mean, std)
        self.eval_transform = HeightTransform(False, None, mean=mean, std=std)
        self._datasets: dict[str, Any] = {}
        self._pixel_size: float | None = None

    def _resolve(self, value: PairsArg) -> list[tuple[Path, Path]]:
        if isinstance(value, str | Path):
            return find_height_pairs(value, self.hparams.image_dir, self.hparams.target_dir)
        pairs = [(Path(p[0]).expanduser(), Path(p[1]).expanduser()) for p in value or []]
        if any(len(p) != 2 for p in value or []):
            raise ValueError("each pair must be [image, target]")
        return pairs

    def pair_list(self, stage: str) -> list[tuple[Path, Path]]:
        """The ``(image, target)`` paths of ``"train"``, ``"val"`` or ``"test"``."""
        hp = self.hparams
        chosen = {
            "train": hp.pairs,
            "val": hp.val_pairs or hp.pairs,
            "test": hp.test_pairs or hp.val_pairs or hp.pairs,
        }[stage]
        if chosen is None:
            raise ValueError(
                f"no {stage} pairs configured: set data.pairs (a folder with {hp.image_dir}/ and "
                f"{hp.target_dir}/, or [[image, target], ...])"
            )
        return self._resolve(chosen)

    @property
    def pixel_size(self) -> float | None:
        """Ground size of one pixel in CRS units (metres for projected data) of the first training image.

        Falls back to the first image to predict when there are no training pairs.

        ``None`` for unreferenced or geographic (degree) rasters, where a metre scale bar would lie.
        """
        if self._pixel_size is None:
            image = (
                self.pair_list("train")[0][0] if self.hparams.pairs is not None else self.predict_paths()[0]
            )
            self._pixel_size = projected_pixel_size(image) or -1.0
        return self._pixel_size if self._pixel_size > 0 else None

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on these data expects of its input (for exported weights)."""
        hp = self.hparams
        return {
            "input_size": [self.in_chans, int(hp.crop_size), int(hp.crop_size)],
            "mean": [float(v) for v in hp.mean] if hp.mean is not None else None,
            "std": [float(v) for v in hp.std] if hp.std is not None else None,
            "bands": list(hp.image_bands) if hp.image_bands is not None else None,
        }

    def predict_paths(self) -> list[Path]:
        """The images ``predict`` runs on (see ``predict_images``)."""
        chosen = self.hparams.predict_images
        if chosen is None:
            return [image for image, _ in self.pair_list("test")]
        if isinstance(chosen, str | Path):
            path = Path(chosen).expanduser()
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
                if not found:
                    raise FileNotFoundError(f"no rasters in {path}")
                return found
            if not path.is_file():
                raise FileNotFoundError(f"predict_images: {path} is neither a raster nor a folder")
            return [path]
        return [Path(p).expanduser() for p in chosen]

    def dataset(self, stage: str) -> Dataset:
        """The dataset of ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (images alone), built once."""
        if stage == "predict":
            if "predict" not in self._datasets:
                images = _HeightImageDataset(
                    self.predict_paths(), self.eval_transform, self.hparams.image_bands
                )
                bands = images[0]["image"].shape[0]
                if bands != self.in_chans:
                    raise ValueError(f"{images.paths[0]} gives {bands} bands but in_chans is {self.in_chans}")
                self._datasets["predict"] = images
            return self._datasets["predict"]
        if stage not in self._datasets:
            hp = self.hparams
            dataset = _MaskedHeightDataset(
                self.pair_list(stage),
                transform=self.train_transform if stage == "train" else self.eval_transform,
                kind=hp.kind,
                negative=hp.negative,
                target_nodata=hp.target_nodata,
                image_bands=hp.image_bands,
                reproject=hp.reproject,
            )
            first = dataset[0]["image"]
            if first.shape[0] != self.in_chans:
                raise ValueError(
                    f"{dataset.pairs[0][0]} gives {first.shape[0]} bands but in_chans is {self.in_chans}"
                )
            self._datasets[stage] = dataset
        return self._datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for name in wanted.get(stage or "fit", ("train", "val")):
            self.dataset(name)

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return height_collate
