"""``rsvit zero-shot``: classify scene images with a CLIP checkpoint and text prompts, no training.

Reads a folder with one sub-folder per class (UCM, AID, NWPU-RESISC45, RSSCN7), a MillionAID tree, or an
RSP split file; builds the text classifier from readable class names and a template set; writes
``predictions.csv`` (one row per image), ``metrics.json`` (accuracy, per-class accuracy, confusion
matrix, everything needed to repeat the run) and ``confusion.png``, atomically, never over existing
files unless ``--overwrite``.

One line per published model, e.g. RemoteCLIP ViT-B/32 on AID (meant to reproduce the paper's 77.96 %
top-1; see ``docs/zero_shot.md`` for the others)::

    rsvit zero-shot AID/ --checkpoint RemoteCLIP-ViT-B-32.pt --model remoteclip-vit-b-32 --out runs/aid
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsvit.cli.zero_shot_args import add_zero_shot_arguments
from rsvit.utils.atomic import atomic_write_text

__all__ = ["OUTPUT_FILES", "add_zero_shot_arguments", "run_zero_shot"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("predictions.csv", "metrics.json", "confusion.png")


class _ClipImageTransform:
    """(C, H, W) array from the dataset reader -> open_clip's eval transform (which works on PIL)."""

    def __init__(self, preprocess: Any) -> None:
        self.preprocess = preprocess

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from rsvit.data.io import to_unit_range

        if array.dtype != np.uint8:
            array = np.round(to_unit_range(array) * 255.0).clip(0, 255).astype(np.uint8)
        return self.preprocess(Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))))


def _dataset(args: argparse.Namespace, transform: Any) -> Any:
    from rsvit.data.classification.datasets import (
        FolderSceneDataset,
        LabelFileSceneDataset,
        MillionAIDDataset,
    )

    kwargs = {"transform": transform, "num_bands": 3}
    if args.split_file is not None:
        dataset = LabelFileSceneDataset(args.images, args.split_file, image_dir=args.image_dir, **kwargs)
    elif args.layout == "millionaid":
        dataset = MillionAIDDataset(args.images, **kwargs)
    else:
        dataset = FolderSceneDataset(args.images, **kwargs)
    if args.limit_per_class is not None:
        if args.limit_per_class < 1:
            raise ValueError(f"--limit-per-class must be >= 1, got {args.limit_per_class}")
        seen: dict[int, int] = {}
        kept = []
        for record in dataset.records:
            seen[record.label] = seen.get(record.label, 0) + 1
            if seen[record.label] <= args.limit_per_class:
                kept.append(record)
        dataset.records = kept
    return dataset


def _predictions_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["path", "label", "label_name", "prediction", "prediction_name", "probability", "correct"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _scores(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, Any]:
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    per_class = [
        float(100.0 * confusion[i, i] / support[i]) if support[i] else None for i in range(num_classes)
    ]
    return {
        "accuracy": float(100.0 * (labels == predictions).mean()) if len(labels) else None,
        "per_class_accuracy": per_class,
        "support": support.tolist(),
        "confusion": confusion.tolist(),
    }


def run_zero_shot(args: argparse.Namespace) -> int:
    """Classifies the images, writes the three outputs and prints the accuracy."""
    from rsvit.data.classification.datasets import collate_skip_none
    from rsvit.models.clip import (
        CLIP_PRESETS,
        ZeroShotClassifier,
        cached_text_classifier,
        load_clip,
        readable_names,
        register_model_config,
        resolve_templates,
    )
    from rsvit.tasks.reports import plot_confusion_matrix

    out = Path(args.out)
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{out} already holds {existing}; choose another --out or pass --overwrite")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")

    model_name = register_model_config(args.model_config) if args.model_config is not None else args.model
    preset = CLIP_PRESETS.get(str(model_name).lower())
    template_choice = args.templates or (preset.templates if preset else "rs-general")
    templates = resolve_templates(template_choice)
    averaging = args.averaging or (preset.averaging if preset else "normalise-then-mean")

    clip = load_clip(args.checkpoint, model=model_name, device=args.device)
    dataset = _dataset(args, _ClipImageTransform(clip.preprocess))
    if len(dataset) == 0:
        raise ValueError(f"no images to classify in {args.images}")
    names = readable_names(dataset.classes, args.dataset)
    weights, from_cache = cached_text_classifier(
        clip.model, clip.tokenizer, names, templates, averaging, cache_dir=args.cache_dir
    )
    scale = args.logit_scale
    if scale not in ("fixed", "model"):
        try:
            scale = float(scale)
        except ValueError:
            raise ValueError(f"--logit-scale takes 'fixed', 'model' or a number, got {scale!r}") from None
    classifier = ZeroShotClassifier(clip.model, weights, ZeroShotClassifier.scale_from(clip.model, scale))

    loader = DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_skip_none
    )
    rows: list[dict[str, Any]] = []
    for batch in loader:
        if batch is None:
            continue
        predicted, probabilities = classifier.predict(batch["image"].to(args.device))
        for path, label, index, probs in zip(
            batch["path"], batch["label"].tolist(), predicted.tolist(), probabilities.cpu(), strict=True
        ):
            rows.append(
                {
                    "path": path,
                    "label": label,
                    "label_name": dataset.classes[label],
                    "prediction": index,
                    "prediction_name": dataset.classes[index],
                    "probability": f"{float(probs[index]):.6f}",
                    "correct": int(label == index),
                }
            )
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    predictions = np.array([r["prediction"] for r in rows], dtype=np.int64)
    scores = _scores(labels, predictions, len(dataset.classes))

    report = {
        **scores,
        "num_images": len(rows),
        "classes": dataset.classes,
        "prompt_names": names,
        "templates": list(templates),
        "template_set": template_choice,
        "averaging": averaging,
        "logit_scale": classifier.logit_scale,
        "model": {"architecture": clip.architecture, "preset": clip.preset, **clip.source},
        "published": preset.published if preset else None,
        "text_classifier_cached": from_cache,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", _predictions_csv(rows))
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    title = f"zero-shot {clip.preset or clip.architecture}: {scores['accuracy']:.2f} % top-1"
    plot_confusion_matrix(scores["confusion"], dataset.classes, out / "confusion.png", title=title)
    print(f"{len(rows)} images, {len(dataset.classes)} classes: top-1 {scores['accuracy']:.2f} %")
    print(f"outputs: {out / 'predictions.csv'}, {out / 'metrics.json'}, {out / 'confusion.png'}")
    return 0
