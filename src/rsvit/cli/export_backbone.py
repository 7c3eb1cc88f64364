"""``rsvit export-backbone``: a trained run's backbone as safetensors with its preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_export_backbone_arguments", "export_backbone", "run_export_backbone"]


def _find_source(run: Path) -> Path:
    """The weights file of ``run``: ``run`` itself when it is a file.

    Else the run folder's ``checkpoints/last.ckpt`` or newest ``*.ckpt``, else the ``model.safetensors``
    every run exports.
    """
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"run folder or checkpoint not found: {run}")
    folder = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1]
    exported = run / "model.safetensors"
    if exported.is_file():
        return exported
    raise FileNotFoundError(
        f"neither a checkpoint (*.ckpt) nor an exported model.safetensors in {run}; give a run folder "
        "or the file itself"
    )


def _export_saved_model(path: Path, out: str | Path, with_head: bool) -> Path:
    """The backbone (or whole network) of a model written by the tasks' export (``model.safetensors``)."""
    from rsvit.models import load_model
    from rsvit.models.classifier import classifier_keys
    from rsvit.weights import WeightsMetadata, infer_family, save

    model, spec, meta = load_model(path)
    if with_head:
        network, weights = model, model.state_dict()
    elif spec.task == "classification":
        head = set(classifier_keys(model))
        network, weights = model, {k: v for k, v in model.state_dict().items() if k not in head}
    elif hasattr(model, "backbone"):
        network = model.backbone
        weights = network.state_dict()
    else:
        raise ValueError(f"{path}: a {spec.task} model without a 'backbone' part; use --with-head")
    metadata = WeightsMetadata(
        architecture=spec.backbone if not with_head else meta.architecture,
        input_size=meta.input_size,
        mean=meta.mean,
        std=meta.std,
        band_names=meta.band_names,
        classes=meta.classes,
        extra={
            "source_model": str(path),
            "task": spec.task,
            "with_head": with_head,
            **{k: meta.extra[k] for k in ("bands", "global_step") if k in meta.extra},
        },
    )
    return save(out, weights, metadata, family=infer_family(network))


def export_backbone(run: str | Path, out: str | Path, with_head: bool = False) -> Path:
    """Writes the network of a trained run (only its backbone unless ``with_head``) as safetensors.

    ``run`` is a run folder, a Lightning checkpoint of a ClassificationTask run, or the
    ``model.safetensors`` any task exports (whatever its family).

    The metadata carries the architecture, input size, mean/std, bands and the classes the network was
    trained on, so ``rsvit.weights.load`` / ``read_metadata`` give everything needed to use it.
    """
    import torch

    from rsvit.models.classifier import build_classifier, classifier_keys
    from rsvit.weights import WeightsMetadata, infer_family, save

    ckpt_path = _find_source(Path(run))
    if ckpt_path.suffix == ".safetensors":
        return _export_saved_model(ckpt_path, out, with_head)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    info = checkpoint.get("rsvit")
    exported = Path(run) / "model.safetensors"
    if (
        (not isinstance(info, dict) or "state_dict" not in checkpoint)
        and Path(run).is_dir()
        and exported.is_file()
    ):
        return _export_saved_model(exported, out, with_head)  # a run of another family: its export
    if not isinstance(info, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt_path} is not a checkpoint of an rsvit ClassificationTask run")
    model = build_classifier(info["backbone"], info["num_classes"], info["in_chans"])
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    head = set(classifier_keys(model))
    weights = {k: v for k, v in model.state_dict().items() if with_head or k not in head}
    prep = info.get("preprocessing") or {}
    bands = prep.get("bands")
    metadata = WeightsMetadata(
        architecture=info["backbone"],
        input_size=tuple(prep["input_size"]) if prep.get("input_size") else None,
        mean=tuple(prep["mean"]) if prep.get("mean") else None,
        std=tuple(prep["std"]) if prep.get("std") else None,
        band_names=tuple(f"band_{b}" for b in bands) if bands else None,
        classes=tuple(info["classes"]),
        extra={
            "source_checkpoint": str(ckpt_path),
            "epoch": int(checkpoint.get("epoch", -1)),
            "global_step": int(checkpoint.get("global_step", -1)),
            "with_head": with_head,
            "interpolation": prep.get("interpolation"),
            **({"bands": [int(b) for b in bands]} if bands else {}),
            "crop_pct": prep.get("crop_pct"),
        },
    )
    return save(out, weights, metadata, family=infer_family(model))


def add_export_backbone_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit export-backbone``."""
    parser.add_argument(
        "run",
        type=Path,
        help="run folder (its checkpoints/last.ckpt, else model.safetensors), a .ckpt or a model.safetensors",
    )
    parser.add_argument("out", type=Path, help="output .safetensors file (written atomically)")
    parser.add_argument("--with-head", action="store_true", help="keep the classifier as well")
    return parser


def run_export_backbone(args: argparse.Namespace) -> int:
    """Exports and prints what was written."""
    from rsvit.weights import read_metadata

    path = export_backbone(args.run, args.out, with_head=args.with_head)
    meta = read_metadata(path)
    print(
        f"wrote {path}: {meta.architecture}, input {meta.input_size}, "
        f"{len(meta.classes or ())} training classes"
    )
    return 0
