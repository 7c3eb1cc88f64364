"""Reading CLIP checkpoints (RemoteCLIP, GeoRSCLIP, SkyCLIP, OpenAI/LAION) safely into open_clip models.

The remote-sensing CLIP files are stock open_clip architectures saved three ways (see
``SPEC-clip-rs.md``): RemoteCLIP and GeoRSCLIP as plain state dicts, SkyCLIP as an open_clip training
checkpoint ``{"epoch", "name", "state_dict", "optimizer", ...}`` whose keys carry ``module.`` after
multi-GPU training. We never hand the file to open_clip's own loader (it may unpickle arbitrary
objects): the tensors come through :func:`rsvit.weights.read_checkpoint` (safetensors,
``torch.load(weights_only=True)`` or the restricted unpickler), the wrapper and the prefix are removed
here, and the result goes into ``open_clip.create_model(name)`` with a strict ``load_state_dict`` —
what every paper's own code does (GeoRSCLIP's README passes ``strict=False``, but its keys are
open_clip's own, so a strict load passes; a non-strict one would hide a wrong architecture).

The architecture is recognised from the keys and shapes (RN50, ViT-B-32, ViT-L-14, ViT-H-14) or named.
The activation is *not* recorded in the weights: OpenAI-initialised checkpoints (GeoRSCLIP ViT-B/32,
SkyCLIP ViT-L/14, OpenAI's own) need the ``-quickgelu`` configs. The presets in :data:`CLIP_PRESETS`
carry the right architecture, activation, templates and averaging rule for each published model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsvit.weights import CheckpointFormatError, WeightsMismatchError, read_checkpoint

__all__ = [
    "CLIP_PRESETS",
    "RECOGNISED_ARCHITECTURES",
    "ClipPreset",
    "LoadedClip",
    "build_clip",
    "check_state_dict",
    "clip_state_dict_from_file",
    "expected_shapes",
    "load_clip",
    "recognise_architecture",
    "register_model_config",
    "resolve_model_name",
    "wrap_model",
]

#: Architectures recognised from the keys alone (the key manifests in ``shared/reference/keys``).
RECOGNISED_ARCHITECTURES = ("RN50", "ViT-B-32", "ViT-L-14", "ViT-H-14")

NORMALISE_THEN_MEAN = "normalise-then-mean"
MEAN_THEN_NORMALISE = "mean-then-normalise"


@dataclass(frozen=True)
class ClipPreset:
    """How one published checkpoint is built and evaluated.

    Attributes:
        architecture: open_clip model name, ``-quickgelu`` where the weights were trained with it.
        templates: template set name (:mod:`rsvit.models.clip.templates`).
        averaging: class-embedding rule of the paper's evaluation code.
        published: the zero-shot numbers the preset is meant to reproduce, with their source.
    """

    architecture: str
    templates: str
    averaging: str
    published: str


CLIP_PRESETS: dict[str, ClipPreset] = {
    "remoteclip-rn50": ClipPreset("RN50", "remoteclip", NORMALISE_THEN_MEAN, "RemoteCLIP paper, RN50 rows"),
    "remoteclip-vit-b-32": ClipPreset(
        "ViT-B-32", "remoteclip", NORMALISE_THEN_MEAN, "AID 77.96 % top-1 (RemoteCLIP paper via issue #18)"
    ),
    "remoteclip-vit-l-14": ClipPreset(
        "ViT-L-14", "remoteclip", NORMALISE_THEN_MEAN, "RemoteCLIP paper, ViT-L/14 rows"
    ),
    "georsclip-vit-b-32": ClipPreset(
        "ViT-B-32-quickgelu",
        "georsclip",
        MEAN_THEN_NORMALISE,
        "AID 74.42, RESISC45 72.74, EuroSAT 61.40 % top-1 (RS5M README)",
    ),
    "georsclip-vit-h-14": ClipPreset(
        "ViT-H-14",
        "georsclip",
        MEAN_THEN_NORMALISE,
        "AID 76.33, RESISC45 73.83, EuroSAT 67.47 % (RS5M README)",
    ),
    "skyclip-vit-l-14": ClipPreset(
        "ViT-L-14-quickgelu",
        "skyclip",
        NORMALISE_THEN_MEAN,
        "7-dataset average 59.91 (top30pct) / 60.69 (filtered_by_CLIP_laion_RS) % (SkyScript README)",
    ),
    "skyclip-vit-b-32": ClipPreset(
        "ViT-B-32", "skyclip", NORMALISE_THEN_MEAN, "7-dataset average 53.02 % (top50pct, SkyScript README)"
    ),
    "openai-rn50": ClipPreset("RN50-quickgelu", "rs-general", NORMALISE_THEN_MEAN, "baseline, no RS number"),
    "openai-vit-b-32": ClipPreset(
        "ViT-B-32-quickgelu", "remoteclip", NORMALISE_THEN_MEAN, "AID 68.62 % (CLIP baseline, RemoteCLIP #18)"
    ),
    "openai-vit-l-14": ClipPreset(
        "ViT-L-14-quickgelu", "skyclip", NORMALISE_THEN_MEAN, "7-dataset average 53.76 % (SkyScript README)"
    ),
}


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs a warning for every model built without weights; ours always are."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def register_model_config(path: str | os.PathLike[str]) -> str:
    """Adds an open_clip model config (JSON) to open_clip's list; returns its name (the file stem)."""
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"open_clip model config not found: {path}")
    open_clip.add_model_config(path)
    expected_shapes.cache_clear()
    return path.stem


def resolve_model_name(name: str) -> str:
    """An open_clip architecture name from a preset or architecture name; unknown names are errors."""
    import open_clip

    if name.lower() in CLIP_PRESETS:
        return CLIP_PRESETS[name.lower()].architecture
    if name in open_clip.list_models():
        return name
    raise ValueError(
        f"unknown CLIP model {name!r}: give a preset ({', '.join(sorted(CLIP_PRESETS))}), an open_clip "
        f"architecture (e.g. {', '.join(RECOGNISED_ARCHITECTURES)}, or the '-quickgelu' variants), 'auto' to "
        "recognise it from the checkpoint's keys, or an open_clip JSON config"
    )


def _create(name: str, device: str | torch.device = "cpu") -> nn.Module:
    import open_clip

    with _quiet_open_clip():
        return open_clip.create_model(name, pretrained=None, device=device, pretrained_text=False)


@functools.lru_cache(maxsize=16)
def expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``open_clip.create_model(name)``'s state dict, built on the meta device."""
    with torch.device("meta"):
        model = _create(name, device="meta")
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _causal_mask(size: int) -> torch.Tensor:
    return torch.full((size, size), float("-inf")).triu_(1)


def _create_filled(name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """``create_model(name)`` holding ``state_dict`` (strict), in float32.

    Built on the meta device and filled by assignment, so no random initialisation is computed (seconds
    for ViT-H); the only tensors outside the file, the text towers' causal masks, are rebuilt here.
    """
    with torch.device("meta"):
        model = _create(name, device="meta")
    model.load_state_dict(state_dict, strict=True, assign=True)
    for module_name, module in model.named_modules():
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_meta:
                continue
            if buffer_name != "attn_mask" or buffer.ndim != 2 or buffer.shape[0] != buffer.shape[1]:
                raise RuntimeError(f"{name}: buffer {module_name}.{buffer_name} is not in the checkpoint")
            module.register_buffer(buffer_name, _causal_mask(buffer.shape[0]), persistent=False)
    return model.float()


def build_clip(name: str) -> nn.Module:
    """A randomly initialised open_clip model in eval mode (fill it with :func:`load_clip`)."""
    return _create(resolve_model_name(name)).eval()


def _looks_like_clip(keys: set[str]) -> bool:
    return "token_embedding.weight" in keys and any(k.startswith("visual.") for k in keys)


def _difference(
    state_dict: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, Any]:
    missing = sorted(set(shapes) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(shapes))
    wrong = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {shapes[k]}"
        for k in set(shapes) & set(state_dict)
        if tuple(state_dict[k].shape) != shapes[k]
    )
    return {"missing": missing, "unexpected": unexpected, "shapes": wrong}


def recognise_architecture(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The one of :data:`RECOGNISED_ARCHITECTURES` whose keys and shapes the state dict has exactly.

    Raises :class:`~rsvit.weights.CheckpointFormatError` for tensors that are no CLIP model, and
    :class:`~rsvit.weights.WeightsMismatchError` for a CLIP of another architecture, naming the closest.
    """
    keys = set(state_dict)
    if not _looks_like_clip(keys):
        raise CheckpointFormatError(
            "not an open_clip CLIP state dict (no 'token_embedding.weight' and 'visual.*' keys); "
            f"first keys: {sorted(keys)[:6]}. Hugging Face transformers CLIP files ('text_model.*', "
            "'vision_model.*') are not supported; convert them to open_clip names first"
        )
    scores = []
    for name in RECOGNISED_ARCHITECTURES:
        diff = _difference(state_dict, expected_shapes(name))
        if not any(diff.values()):
            return name
        scores.append((sum(len(v) for v in diff.values()), name, diff))
    _, closest, diff = min(scores)
    raise WeightsMismatchError(
        f"the CLIP checkpoint matches none of {', '.join(RECOGNISED_ARCHITECTURES)}; closest is {closest} "
        f"({len(diff['missing'])} missing, {len(diff['unexpected'])} unexpected, {len(diff['shapes'])} "
        f"differently shaped entries, e.g. {(diff['shapes'] or diff['missing'] or diff['unexpected'])[:2]}). "
        "Name its open_clip architecture with model=... (e.g. 'ViT-B-16') or give its JSON config"
    )


def check_state_dict(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Raises :class:`~rsvit.weights.WeightsMismatchError` unless a strict load into ``name`` would pass."""
    diff = _difference(state_dict, expected_shapes(name))
    if not any(diff.values()):
        return
    hint = ""
    if _looks_like_clip(set(state_dict)):
        with contextlib.suppress(WeightsMismatchError):
            hint = f"; the keys are those of {recognise_architecture(state_dict)}: use that architecture"
    raise WeightsMismatchError(
        f"checkpoint does not fit open_clip {name!r}: {len(diff['missing'])} missing (e.g. "
        f"{diff['missing'][:3]}), {len(diff['unexpected'])} unexpected (e.g. {diff['unexpected'][:3]}), "
        f"{len(diff['shapes'])} differently shaped (e.g. {diff['shapes'][:2]}){hint}"
    )


def clip_state_dict_from_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The CLIP tensors of a file, unwrapped from ``state_dict`` and stripped of ``module.``.

    Returns the state dict and what was learnt about the file (format, wrapper, stripped prefix).
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.format == "pickled-module":
        raise CheckpointFormatError(
            f"{path} is a whole pickled model, not a CLIP state dict; save model.state_dict() instead"
        )
    state_dict = dict(checkpoint.state_dict)
    info = {"format": checkpoint.format, **checkpoint.metadata}
    prefixed = [k.startswith("module.") for k in state_dict]
    if all(prefixed):  # multi-GPU training checkpoints (SkyCLIP)
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
        info["stripped_prefix"] = "module."
    elif any(prefixed):
        raise CheckpointFormatError(
            f"{path}: some keys start with 'module.' and others do not (e.g. "
            f"{next(k for k in state_dict if k.startswith('module.'))!r}); the file mixes two models"
        )
    return state_dict, info


@dataclass
class LoadedClip:
    """An open_clip model with its tokenizer, eval transform and where it came from."""

    model: nn.Module
    architecture: str
    tokenizer: Any
    preprocess: Any
    preset: str | None = None
    source: dict[str, str] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)


def _components(model: nn.Module, architecture: str) -> tuple[Any, Any]:
    import open_clip
    from open_clip.model import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    preprocess = open_clip.image_transform(
        cfg["size"],
        is_train=False,
        mean=cfg.get("mean"),
        std=cfg.get("std"),
        resize_mode=cfg.get("resize_mode"),
        interpolation=cfg.get("interpolation"),
    )
    return open_clip.get_tokenizer(architecture), preprocess


def wrap_model(model: nn.Module, architecture: str, preset: str | None = None) -> LoadedClip:
    """A :class:`LoadedClip` around an already built open_clip model (e.g. seeded random weights)."""
    tokenizer, preprocess = _components(model, architecture)
    return LoadedClip(model.eval(), architecture, tokenizer, preprocess, preset)


def load_clip(
    path: str | os.PathLike[str], model: str = "auto", device: str | torch.device = "cpu"
) -> LoadedClip:
    """Builds the open_clip model for a checkpoint file and loads the file into it strictly.

    Args:
        path: safetensors / ``.pt`` / ``.bin`` file (plain state dict or open_clip training checkpoint).
        model: ``"auto"`` (architecture from the keys, GELU), a preset name from :data:`CLIP_PRESETS`,
            or an open_clip architecture name (``"ViT-L-14-quickgelu"``...).
        device: where the model runs.
    """
    state_dict, info = clip_state_dict_from_file(path)
    preset = model.lower() if model.lower() in CLIP_PRESETS else None
    if model == "auto":
        architecture = recognise_architecture(state_dict)
        info["architecture_from"] = "keys"
    else:
        architecture = resolve_model_name(model)
        info["architecture_from"] = "preset" if preset else "named"
    check_state_dict(state_dict, architecture)
    network = _create_filled(architecture, state_dict).to(device).eval()
    loaded = wrap_model(network, architecture, preset)
    loaded.source = {"path": str(path), **info}
    return loaded
