"""``rsvit zero-shot``: classify scene images with a CLIP checkpoint and text prompts, no training.

Reads a folder with one sub-folder per class (UCM, AID, NWPU-RESISC45, RSSCN7), a MillionAID tree, or an
RSP split file; builds the text classifier from readable class names and a template set; writes
``predictions.csv`` (one row per image), ``metrics.json`` (accuracy, per-class accuracy, confusion
matrix, everything needed to repeat the run) and ``confusion.png``, atomically, never over existing
files unless ``--overwrite``.

With ``--shots K --support DIR`` the classifier is adapted to K labelled images per class (a training-free
cache adapter, or a linear probe with ``--few-shot probe``); with ``--raster scene.tif`` the scene's tiles
are classified through the raster engine into ``tiles.tif`` (one class per tile) and
``tiles_probabilities.tif``; ``--save-model`` writes the classifier as an rsvit classification model file.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsvit.cli.zero_shot_args import add_zero_shot_arguments
from rsvit.utils.atomic import atomic_write_text

__all__ = ["OUTPUT_FILES", "RASTER_FILES", "add_zero_shot_arguments", "run_zero_shot"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("predictions.csv", "metrics.json", "confusion.png")
RASTER_FILES = ("tiles.tif", "tiles_probabilities.tif", "tiles.json")


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


def _read_classes(text: str) -> list[str]:
    """``--classes``: a text file with one name per line, or a comma-separated list."""
    path = Path(text)
    items = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(",")
    classes = [item.strip() for item in items if item.strip()]
    if not classes:
        raise ValueError(f"--classes {text!r} names no class; give a comma-separated list or a file")
    if len(set(classes)) != len(classes):
        raise ValueError(f"--classes names a class twice: {classes}")
    return classes


def _support_dataset(args: argparse.Namespace, transform: Any) -> Any:
    """The labelled images (class folders or an RSP split file), with their own class list."""
    from rsvit.data.classification.datasets import FolderSceneDataset, LabelFileSceneDataset
    from rsvit.models.clip import SupportError

    path = Path(args.support)
    if not path.exists():
        raise FileNotFoundError(f"--support {path} not found; give class folders or an RSP split file")
    try:
        if path.is_dir():
            return FolderSceneDataset(path, transform=transform, num_bands=3)
        root = Path(args.support_root) if args.support_root is not None else path.parent
        return LabelFileSceneDataset(root, path.resolve(), image_dir=".", transform=transform, num_bands=3)
    except (ValueError, FileNotFoundError) as err:
        raise SupportError(f"support set {path}: {err}") from err


def _shots_for(support: Any, classes: list[str]) -> None:
    """Relabels the support's records to ``classes`` (by name); records of other classes are dropped."""
    index = {name: i for i, name in enumerate(classes)}
    extra = sorted(set(support.classes) - set(index))
    if extra:
        log.warning("the support set's classes %s are not classified here; their images are not used", extra)
    kept = []
    for record in support.records:
        name = support.classes[record.label]
        if name in index:
            kept.append(type(record)(record.path, index[name]))
    support.records = kept
    support.classes = list(classes)


def _few_shot_head(
    args: argparse.Namespace,
    clip: Any,
    classes: list[str],
    weights: torch.Tensor,
    scale: float,
    transform: Any,
) -> tuple[torch.nn.Module, dict[str, Any], set[str]]:
    """The few-shot head, what to report about it, and the shots' paths (kept out of the evaluation)."""
    from torch.utils.data import Subset

    from rsvit.data.classification.datasets import collate_skip_none
    from rsvit.models.clip import (
        CacheAdapterHead,
        SupportError,
        fit_linear_probe,
        image_features,
        sample_shots,
    )

    support = _support_dataset(args, transform)
    _shots_for(support, classes)
    chosen = sample_shots(support.targets, classes, args.shots, args.seed)
    loader = DataLoader(
        Subset(support, chosen),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate_skip_none,
    )
    labels: list[torch.Tensor] = []
    paths: list[str] = []

    def shot_images() -> Iterator[torch.Tensor]:
        for batch in loader:
            if batch is not None:  # None: every image of the batch was unreadable
                labels.append(batch["label"])
                paths.extend(batch["path"])
                yield batch["image"]

    keys = image_features(clip.model.encode_image, shot_images(), args.device)
    labels_t = torch.cat(labels)
    unread = sorted(set(classes) - {classes[i] for i in labels_t.tolist()})
    if unread:
        raise SupportError(f"classes without shots: no readable support image of {unread}")
    report: dict[str, Any] = {
        "method": args.few_shot,
        "shots": args.shots,
        "seed": args.seed,
        "support": str(args.support),
        "support_images": len(paths),
        "shot_images": list(paths),
    }
    if args.few_shot == "cache":
        head: torch.nn.Module = CacheAdapterHead(weights, keys, labels_t, scale, args.alpha, args.beta)
        report.update(alpha=args.alpha, beta=args.beta)
    else:
        init = scale * weights if args.probe_init == "text" else None
        head = fit_linear_probe(keys, labels_t, len(classes), init=init, weight_decay=args.probe_weight_decay)
        report.update(init=args.probe_init, weight_decay=args.probe_weight_decay)
    return head, report, {str(Path(p).resolve()) for p in paths}


def _logit_scale(args: argparse.Namespace, model: torch.nn.Module) -> float:
    from rsvit.models.clip import ZeroShotClassifier

    scale = args.logit_scale
    if scale not in ("fixed", "model"):
        try:
            scale = float(scale)
        except ValueError:
            raise ValueError(f"--logit-scale takes 'fixed', 'model' or a number, got {scale!r}") from None
    return ZeroShotClassifier.scale_from(model, scale)


def _check_classifier_flags(args: argparse.Namespace) -> None:
    """A saved classifier has its classes and head: the options that build one do not apply."""
    given = {
        "--shots": args.shots,
        "--support": args.support,
        "--templates": args.templates,
        "--model-config": args.model_config,
        "--classes": args.classes,
        "--save-model": args.save_model,
    }
    not_here = [flag for flag, value in given.items() if value is not None]
    if not_here:
        raise ValueError(
            f"--classifier is a finished classifier with its own classes: {', '.join(not_here)} do not apply"
        )


def _check_request(args: argparse.Namespace, out: Path) -> None:
    """Settings and existing outputs, checked before the checkpoint is read."""
    if (args.checkpoint is None) == (args.classifier is None):
        raise ValueError("give the CLIP weights with --checkpoint, or a saved classifier with --classifier")
    if args.classifier is not None:
        _check_classifier_flags(args)
    if args.images is None and args.raster is None:
        raise ValueError("nothing to classify: give IMAGES (a dataset folder), --raster scene.tif, or both")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.support is not None and args.shots is None:
        raise ValueError("--support is used with --shots K (the number of labelled images per class)")
    if args.shots is not None and args.support is None:
        raise ValueError("--shots needs --support: the folder (or split file) of labelled images")
    if args.save_model is not None and args.shots is not None and args.few_shot == "cache":
        raise ValueError(
            "--save-model writes linear classifiers (zero-shot, or --few-shot probe); the cache adapter "
            "keeps its shots beside the model: rerun it with --support, or save a probe"
        )
    if args.raster is not None and not Path(args.raster).is_file():
        raise FileNotFoundError(f"--raster {args.raster} not found")
    names = (OUTPUT_FILES if args.images is not None else ()) + (
        RASTER_FILES if args.raster is not None else ()
    )
    existing = [name for name in names if (out / name).exists()]
    if args.raster is not None and args.resume:
        existing = [name for name in existing if name not in RASTER_FILES]
    if existing and not args.overwrite:
        raise FileExistsError(f"{out} already holds {existing}; choose another --out or pass --overwrite")
    if args.save_model is not None and Path(args.save_model).exists() and not args.overwrite:
        raise FileExistsError(f"{args.save_model} exists; choose another --save-model or pass --overwrite")


def _classify_images(
    dataset: Any, predict: Any, args: argparse.Namespace, skip: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """One CSV row per image (the shots in ``skip`` left out), and how many were left out."""
    from rsvit.data.classification.datasets import collate_skip_none

    before = len(dataset.records)
    dataset.records = [r for r in dataset.records if str(Path(r.path).resolve()) not in skip]
    if not dataset.records:
        raise ValueError(f"no images to classify in {args.images} once the support shots are left out")
    loader = DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_skip_none
    )
    rows: list[dict[str, Any]] = []
    for batch in loader:
        if batch is None:
            continue
        predicted, probabilities = predict(batch["image"].to(args.device))
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
    return rows, before - len(dataset.records)


def _classify_raster(
    args: argparse.Namespace, scene: Any, meta: Any, out: Path, describe: dict[str, Any]
) -> Any:
    """``tiles.tif`` (+ probabilities) through the raster engine, and ``tiles.json`` describing the run."""
    from rsvit.inference import predict_raster
    from rsvit.models.clip import WindowScores

    classes = list(meta.classes)
    report = predict_raster(
        WindowScores(scene, len(classes)),
        args.raster,
        out / "tiles.tif",
        window=args.window if args.window is not None else int(meta.input_size[-1]),
        overlap=args.overlap,
        bands=args.bands,
        batch_size=args.batch_size,
        device=args.device,
        probabilities=None if args.scores == "none" else args.scores,
        resume=args.resume,
        overwrite=args.overwrite,
        metadata=meta,
        task="segmentation",  # a class map: each window's scores held over the window
    )
    summary = {
        "raster": str(args.raster),
        "class_map": str(report.output),
        "probabilities": str(report.probabilities) if report.probabilities else None,
        "window": report.window,
        "overlap": report.overlap,
        "windows": report.windows,
        "skipped_windows": report.skipped_windows,
        "seconds": round(report.seconds, 3),
        **describe,
    }
    atomic_write_text(out / "tiles.json", json.dumps(summary, indent=2) + "\n")
    print(report.summary())
    return report


@dataclass
class _Classifier:
    """What a run classifies with: the scene model, its file metadata and how to describe it."""

    scene: torch.nn.Module
    meta: Any
    describe: dict[str, Any]
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    dataset: Any
    kind: str
    save: Callable[[Path], None] | None = None
    left_out: set[str] = field(default_factory=set)


def _scene_predict(scene: torch.nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    @torch.no_grad()
    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = scene(images).float().softmax(dim=-1)
        return probabilities.argmax(dim=-1), probabilities

    return predict


def _from_clip(args: argparse.Namespace) -> _Classifier:
    """The zero-shot or few-shot classifier of a CLIP checkpoint, and the images to classify."""
    from rsvit.models.clip import (
        CLIP_PRESETS,
        ClipSceneClassifier,
        ZeroShotClassifier,
        cached_text_classifier,
        load_clip,
        readable_names,
        register_model_config,
        resolve_templates,
        scene_metadata,
        scene_spec,
        zero_shot_head,
    )

    model_name = register_model_config(args.model_config) if args.model_config is not None else args.model
    preset = CLIP_PRESETS.get(str(model_name).lower())
    template_choice = args.templates or (preset.templates if preset else "rs-general")
    templates = resolve_templates(template_choice)
    averaging = args.averaging or (preset.averaging if preset else "normalise-then-mean")

    clip = load_clip(args.checkpoint, model=model_name, device=args.device)
    transform = _ClipImageTransform(clip.preprocess)
    dataset = _dataset(args, transform) if args.images is not None else None
    if dataset is not None:
        classes = list(dataset.classes)
    elif args.classes is not None:
        classes = _read_classes(args.classes)
    elif args.support is not None:
        classes = list(_support_dataset(args, transform).classes)
    else:
        raise ValueError("name the classes of the raster's tiles: --classes a,b,c (or a file), or --support")
    names = readable_names(classes, args.dataset)
    weights, from_cache = cached_text_classifier(
        clip.model, clip.tokenizer, names, templates, averaging, cache_dir=args.cache_dir
    )
    scale = _logit_scale(args, clip.model)
    few_shot: dict[str, Any] | None = None
    shot_paths: set[str] = set()
    if args.shots is not None:
        head, few_shot, shot_paths = _few_shot_head(args, clip, classes, weights, scale, transform)
    else:
        head = zero_shot_head(weights, scale)
    scene = ClipSceneClassifier(clip.model.visual, head.to(args.device)).eval()
    describe = {
        "classes": classes,
        "prompt_names": names,
        "templates": list(templates),
        "template_set": template_choice,
        "averaging": averaging,
        "logit_scale": scale,
        "model": {"architecture": clip.architecture, "preset": clip.preset, **clip.source},
        "few_shot": few_shot,
        "published": preset.published if preset else None,
        "text_classifier_cached": from_cache,
    }
    meta = scene_metadata(clip.preprocess, scene.image_size, classes, extra={"clip": describe})
    if few_shot is None:  # the zero-shot classifier itself, as before few-shot existed
        predict = ZeroShotClassifier(clip.model, weights, scale).predict
    else:
        predict = _scene_predict(scene)

    def save(path: Path) -> None:
        from rsvit.models import save_model

        save_model(path, scene.cpu(), scene_spec(clip.architecture, len(classes)), meta)

    kind = "zero-shot" if few_shot is None else f"{args.shots}-shot {args.few_shot}"
    label = f"{kind} {clip.preset or clip.architecture}"
    return _Classifier(scene, meta, describe, predict, dataset, label, save, shot_paths)


def _from_model_file(args: argparse.Namespace) -> _Classifier:
    """A classification model file (e.g. from ``--save-model``), and the images to classify."""
    import open_clip

    from rsvit.models import load_model

    scene, spec, meta = load_model(args.classifier)
    if spec.task != "classification":
        raise ValueError(
            f"{args.classifier} is a {spec.task} model; --classifier takes a classification model"
        )
    if not meta.classes or meta.mean is None or meta.std is None or not meta.input_size:
        raise ValueError(
            f"{args.classifier} lacks its class names, mean/std or input size in its metadata; save it with "
            "rsvit zero-shot --save-model or rsvit.models.save_model with a WeightsMetadata"
        )
    scene = scene.to(args.device).eval()
    classes = list(meta.classes)
    size = tuple(meta.input_size[-2:])
    transform = _ClipImageTransform(
        open_clip.image_transform(size, is_train=False, mean=meta.mean, std=meta.std)
    )
    dataset = _dataset(args, transform) if args.images is not None else None
    if dataset is not None and list(dataset.classes) != classes:
        raise ValueError(
            f"{args.images} has the classes {dataset.classes}, the classifier {classes}; classify a dataset "
            "of the classifier's classes"
        )
    describe = {
        "classes": classes,
        "classifier": str(args.classifier),
        "spec": spec.to_dict(),
        "clip": meta.extra.get("clip"),
    }
    return _Classifier(scene, meta, describe, _scene_predict(scene), dataset, f"{spec.head} classifier")


def run_zero_shot(args: argparse.Namespace) -> int:
    """Classifies the images and/or the raster's tiles, writes the outputs and prints the accuracy."""
    from rsvit.tasks.reports import plot_confusion_matrix

    out = Path(args.out)
    _check_request(args, out)
    run = _from_model_file(args) if args.classifier is not None else _from_clip(args)
    dataset = run.dataset
    if dataset is not None:
        if len(dataset) == 0:
            raise ValueError(f"no images to classify in {args.images}")
        rows, left_out = _classify_images(dataset, run.predict, args, run.left_out)
        if run.describe.get("few_shot") is not None:
            run.describe["few_shot"]["shots_left_out_of_evaluation"] = left_out
        labels = np.array([r["label"] for r in rows], dtype=np.int64)
        predictions = np.array([r["prediction"] for r in rows], dtype=np.int64)
        scores = _scores(labels, predictions, len(dataset.classes))
        report = {**scores, "num_images": len(rows), **run.describe}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "predictions.csv", _predictions_csv(rows))
        atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
        title = f"{run.kind}: {scores['accuracy']:.2f} % top-1"
        plot_confusion_matrix(scores["confusion"], dataset.classes, out / "confusion.png", title=title)
        accuracy = f"top-1 {scores['accuracy']:.2f} % ({run.kind})"
        print(f"{len(rows)} images, {len(dataset.classes)} classes: {accuracy}")
        print(f"outputs: {out / 'predictions.csv'}, {out / 'metrics.json'}, {out / 'confusion.png'}")
    if args.raster is not None:
        out.mkdir(parents=True, exist_ok=True)
        _classify_raster(args, run.scene, run.meta, out, run.describe)
    if args.save_model is not None and run.save is not None:  # (refused with --classifier)
        Path(args.save_model).parent.mkdir(parents=True, exist_ok=True)
        run.save(Path(args.save_model))
        print(f"classifier: {args.save_model}")
    return 0
