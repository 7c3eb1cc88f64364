"""``PromptableDataModule``: image + mask data as promptable samples for fine-tuning Segment Anything.

The images and masks are read exactly as :class:`~rsvit.datamodules.segmentation.SegmentationDataModule`
reads them (same ``dataset`` kinds, splits, classes, palettes and ignore rules; that DataModule is built
inside and its datasets are wrapped). Each image is then brought into SAM's input frame
(resize-longest-side to ``img_size`` + pad) and targets and prompts are drawn from its mask
(:mod:`rsvit.data.promptable`): new prompts every training epoch, fixed seeded prompts for validation
and test so that evaluations before and after fine-tuning compare the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rsvit.data.promptable.dataset import PromptableDataset, promptable_collate
from rsvit.data.promptable.prompts_from_masks import ObjectRule, PromptSampler
from rsvit.datamodules.base import DenseDataModule
from rsvit.datamodules.segmentation import DatasetKind, SegmentationDataModule, Split

__all__ = ["PromptableDataModule"]


class PromptableDataModule(DenseDataModule):
    """Promptable fine-tuning data (see the module docstring).

    Args:
        root, dataset, train_split, val_split, test_split, image_dir, mask_dir, mask_suffix, image_token,
            mask_token, classes, palette, mask_format, ignore_index, ignore_colours, ignore_values, bands,
            in_chans: as in :class:`~rsvit.datamodules.segmentation.SegmentationDataModule`.
        img_size: the model's input side (1024 for the released SAM models); must equal the model's.
        objects: ``"components"`` (connected regions of a class are the targets) or ``"classes"``.
        target_classes: names of the classes that give targets (default: all but ``skip_classes``).
        skip_classes: names of classes that never give targets (e.g. an "unlabeled" class).
        min_area: smallest target in input-frame pixels.
        max_objects: targets per image and step.
        num_positive, num_negative: points drawn inside / outside each target.
        box_noise, max_box_noise: jitter of the noisy boxes (fraction of the side, cap in pixels).
        seed: seed of the evaluation prompts.
        hflip, vflip: training flip probabilities.
        batch_size, eval_batch_size, num_workers, train_repeats: loaders.
    """

    def __init__(
        self,
        root: str,
        dataset: DatasetKind = "folders",
        train_split: Split = "train",
        val_split: Split = "val",
        test_split: Split = None,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str | None = None,
        image_token: str = "",
        mask_token: str = "",
        classes: list[str] | None = None,
        palette: list[str | list[int]] | None = None,
        mask_format: str | None = None,
        ignore_index: int = 255,
        ignore_colours: list[str | list[int]] | None = None,
        ignore_values: list[int] | None = None,
        bands: list[int] | None = None,
        in_chans: int = 3,
        img_size: int = 1024,
        objects: ObjectRule = "components",
        target_classes: list[str] | None = None,
        skip_classes: list[str] | None = None,
        min_area: int = 64,
        max_objects: int = 16,
        num_positive: int = 1,
        num_negative: int = 1,
        box_noise: float = 0.1,
        max_box_noise: float = 20.0,
        seed: int = 0,
        hflip: float = 0.5,
        vflip: float = 0.0,
        batch_size: int = 2,
        eval_batch_size: int = 2,
        num_workers: int = 2,
        train_repeats: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["palette"])
        self.images = SegmentationDataModule(
            root,
            dataset=dataset,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            image_dir=image_dir,
            mask_dir=mask_dir,
            mask_suffix=mask_suffix,
            image_token=image_token,
            mask_token=mask_token,
            classes=classes,
            palette=palette,
            mask_format=mask_format,  # type: ignore[arg-type]
            ignore_index=ignore_index,
            ignore_colours=ignore_colours,
            ignore_values=ignore_values,
            bands=bands,
            in_chans=in_chans,
            mean=[0.0] * in_chans,  # unused: SAM normalises inside the model
            std=[1.0] * in_chans,
            crop_size=img_size,
            num_workers=num_workers,
        )
        if img_size < 16:
            raise ValueError(f"img_size must be the model's input side (e.g. 1024), got {img_size}")
        if train_repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {train_repeats}")
        names = self.images.classes
        for given in (target_classes or []) + (skip_classes or []):
            if given not in names:
                raise ValueError(
                    f"unknown class {given!r} in target_classes/skip_classes; classes are {names}"
                )
        wanted = [n for n in (target_classes or names) if n not in set(skip_classes or [])]
        if not wanted:
            raise ValueError("target_classes minus skip_classes leaves no class to draw targets from")
        self.target_class_ids = tuple(names.index(n) for n in wanted)
        self.sampler = PromptSampler(
            objects=objects,
            ignore_index=ignore_index,
            classes=self.target_class_ids,
            min_area=min_area,
            max_objects=max_objects,
            num_positive=num_positive,
            num_negative=num_negative,
            box_noise=box_noise,
            max_box_noise=max_box_noise,
        )
        self.img_size = int(img_size)
        self.in_chans = int(in_chans)
        self.ignore_index = int(ignore_index)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self._datasets: dict[str, PromptableDataset] = {}

    @property
    def classes(self) -> list[str]:
        return self.images.classes

    def preprocessing(self) -> dict[str, Any]:
        """Input the fine-tuned model expects (SAM normalises inside, so no mean/std here)."""
        bands = self.hparams.bands
        return {"input_size": [self.in_chans, self.img_size, self.img_size], "bands": bands}

    def dataset(self, stage: str) -> PromptableDataset:
        """The promptable dataset of ``"train"``, ``"val"`` or ``"test"`` (built on first use)."""
        if stage == "predict":
            raise ValueError(
                "promptable models predict on rasters with prompts: use 'rsvit segment-raster' (or "
                "'rsvit masks-raster') with the exported model.safetensors"
            )
        if stage not in self._datasets:
            hp = self.hparams
            self._datasets[stage] = PromptableDataset(
                self.images.dataset(stage),
                self.img_size,
                self.sampler,
                seed=hp.seed,
                train=stage == "train",
                hflip=hp.hflip,
                vflip=hp.vflip,
            )
        return self._datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for name in wanted.get(stage or "fit", ("train", "val")):
            self.dataset(name)

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return promptable_collate
