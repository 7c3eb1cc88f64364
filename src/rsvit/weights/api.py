"""Loading official or converted weights into models, and exporting our own weights.

``load`` reads a file (any supported wrapping), converts its keys to our layout and compares them
with a model; ``load_into`` also copies them in. ``save`` / ``read_metadata`` handle our export format:
safetensors plus JSON metadata describing what the weights expect (architecture, input size,
normalisation, band names, classes), written atomically. ``convert_file`` is ``rsvit convert``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import stat
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rsvit.weights.convert import (
    align_feature_names,
    available_families,
    convert_state_dict,
    guess_family,
    infer_family,
    split_prefix,
)
from rsvit.weights.convert_args import add_convert_arguments
from rsvit.weights.errors import CheckpointFormatError, WeightsError, WeightsMismatchError
from rsvit.weights.fit import fit_to_model
from rsvit.weights.formats import read_checkpoint, sniff_file_kind

__all__ = [
    "LoadResult",
    "WeightsMetadata",
    "add_convert_arguments",
    "convert_file",
    "load",
    "load_into",
    "read_metadata",
    "run_convert",
    "save",
]

# Metadata keys written by ``save``; values are JSON except ``format`` (the Hugging Face convention).
_FIELD_KEYS = ("architecture", "input_size", "mean", "std", "band_names", "classes")
_LAYOUT_KEY = "rsvit.layout"
_LAYOUT_VALUE = "rsvit"
_FAMILY_KEY = "rsvit.family"
_RESERVED_KEYS = frozenset({"format", _LAYOUT_KEY, _FAMILY_KEY, *_FIELD_KEYS})

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------


@dataclass
class WeightsMetadata:
    """What a weights file expects of its input and what its outputs mean.

    ``input_size`` is ``(channels, height, width)``; ``mean``/``std`` are per band in the units the model
    is fed (e.g. 0-1 reflectance); ``extra`` holds any further JSON-serialisable entries.
    """

    architecture: str | None = None
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    band_names: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)
        if self.mean is not None:
            self.mean = tuple(float(v) for v in self.mean)
        if self.std is not None:
            self.std = tuple(float(v) for v in self.std)
            if any(not math.isfinite(v) or v <= 0 for v in self.std):
                raise ValueError(f"std must be positive and finite, got {self.std}")
        if self.band_names is not None:
            self.band_names = tuple(str(v) for v in self.band_names)
        if self.classes is not None:
            self.classes = tuple(str(v) for v in self.classes)
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        per_band = [("mean", self.mean), ("std", self.std)]
        if self.band_names is not None:
            for name, values in per_band:
                if values is not None and len(values) != len(self.band_names):
                    raise ValueError(f"{name} has {len(values)} values for {len(self.band_names)} band names")
        if (
            self.input_size is not None
            and self.band_names is not None
            and self.input_size[0] != len(self.band_names)
        ):
            raise ValueError(
                f"input_size has {self.input_size[0]} channels but {len(self.band_names)} band names"
            )
        clash = _RESERVED_KEYS.intersection(self.extra)
        if clash:
            raise ValueError(f"extra metadata may not use the reserved keys {sorted(clash)}")

    def to_safetensors(self) -> dict[str, str]:
        """String-to-string metadata as safetensors stores it (JSON values)."""
        out: dict[str, str] = {"format": "pt"}
        for name in _FIELD_KEYS:
            value = getattr(self, name)
            if value is not None:
                out[name] = json.dumps(list(value) if isinstance(value, tuple) else value)
        for name, value in self.extra.items():
            try:
                out[str(name)] = json.dumps(value)
            except TypeError as exc:
                raise ValueError(f"extra metadata {name!r} is not JSON-serialisable: {exc}") from exc
        return out

    @classmethod
    def from_safetensors(cls, metadata: Mapping[str, str]) -> WeightsMetadata:
        """Inverse of :meth:`to_safetensors`; foreign entries (not JSON) land in ``extra`` as strings."""
        fields: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, raw in metadata.items():
            if name in ("format", _LAYOUT_KEY, _FAMILY_KEY):
                continue  # bookkeeping of the file, reported by ``load`` (``LoadResult.family``)
            try:
                value = json.loads(raw)
            except (TypeError, ValueError):
                value = raw
            if name in _FIELD_KEYS:
                fields[name] = value
            else:
                extra[name] = value
        return cls(**fields, extra=extra)


def read_metadata(path: str | os.PathLike[str]) -> WeightsMetadata:
    """The :class:`WeightsMetadata` of a safetensors file (only the header is read)."""
    path = Path(path)
    if sniff_file_kind(path) != "safetensors":
        raise CheckpointFormatError(f"{path} is not a safetensors file; only those carry rsvit metadata")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(
            f"{path} looks like a safetensors file but its header cannot be read (truncated or "
            f"corrupted?): {exc}"
        ) from exc
    try:
        return WeightsMetadata.from_safetensors(header)
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: invalid metadata: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _tensors_for_safetensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that do not share memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is not a str -> Tensor pair")
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in seen or not whole:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        pass
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write beside the target, then rename: readers never see a half-written file.

    safetensors creates its files private (``0600``); the result gets the permissions a plain ``open``
    would give (those of the file it replaces, else ``0666`` minus the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"))
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_name, _file_mode(path))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def save(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    metadata: WeightsMetadata | None = None,
    *,
    family: str | None = None,
) -> Path:
    """Write weights in our layout to a safetensors file, atomically (temp file + ``os.replace``).

    The file is marked as already converted, so :func:`load` will not convert its keys again.
    """
    path = Path(path)
    header = (metadata or WeightsMetadata()).to_safetensors()
    header[_LAYOUT_KEY] = _LAYOUT_VALUE
    if family is not None:
        header[_FAMILY_KEY] = json.dumps(family)
    _atomic_save(path, _tensors_for_safetensors(state_dict), header)
    return path


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass(repr=False)
class LoadResult:
    """Converted weights and how they compare with the model (empty lists when no model was given).

    Printed, it is the few lines of :meth:`summary`, never the tensors themselves.
    """

    state_dict: dict[str, torch.Tensor]
    format: str
    metadata: dict[str, str]
    family: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    adapted_keys: list[str] = field(default_factory=list)  # input convs adapted to the model's bands
    ignored_keys: list[str] = field(default_factory=list)  # classifier entries a feature model has no use for

    @property
    def ok(self) -> bool:
        """True when every model entry is present with the right shape and nothing is left over."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)

    def summary(self, limit: int = 5) -> str:
        """One readable paragraph of the differences (used in errors and by the CLI)."""
        lines = [f"{len(self.state_dict)} tensors, format {self.format}, family {self.family or '-'}"]
        if self.mismatched_keys:
            shown = ", ".join(
                f"{key}: model expects {list(want)}, file has {list(got)}"
                for key, want, got in self.mismatched_keys[:limit]
            )
            lines.append(f"{len(self.mismatched_keys)} shape mismatches, first: {shown}")
        if self.adapted_keys:
            lines.append(f"{len(self.adapted_keys)} input convolutions adapted to the model's bands")
        if self.ignored_keys:
            lines.append(f"{len(self.ignored_keys)} classifier entries ignored (feature model)")
        if self.missing_keys:
            lines.append(f"{len(self.missing_keys)} missing, e.g. {self.missing_keys[:limit]}")
        if self.unexpected_keys:
            lines.append(f"{len(self.unexpected_keys)} unexpected, e.g. {self.unexpected_keys[:limit]}")
        return "; ".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"LoadResult({self.summary()})"


def _compare(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[list[str], list[str], list[Any]]:
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [
        (k, tuple(target[k].shape), tuple(v.shape))
        for k, v in state_dict.items()
        if k in target and tuple(target[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mismatched


def _mismatch_message(path: Path, result: LoadResult, model: nn.Module, original_keys: Sequence[str]) -> str:
    parts = [f"{path} does not fit {type(model).__name__}: {result.summary()}"]
    guessed = guess_family(dict.fromkeys(original_keys))
    if guessed and result.family and guessed != result.family:
        parts.append(
            f"the file looks like a {guessed!r} checkpoint but the model is of family {result.family!r}; "
            "build the matching architecture"
        )
    architecture = result.metadata.get("architecture")
    if architecture:
        parts.append(f"the file's metadata names the architecture {architecture}")
    model_keys = model.state_dict().keys()
    if any(k.startswith("backbone.") for k in original_keys) and not any(
        k.startswith("backbone.") for k in model_keys
    ):
        parts.append("the file holds a whole segmentation/change-detection model: pass prefix='backbone.'")
    return "\n".join(parts)


def load(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    family: str | None = None,
    strict: bool = False,
    *,
    prefix: str | None = None,
    key: str | None = None,
) -> LoadResult:
    """Read ``path`` safely, convert it to our layout and (with a model) check keys and shapes.

    ``family`` defaults to the model's (``weights_family`` attribute or a recognised timm class), then to
    the family recorded by :func:`save`. ``prefix`` selects a sub-module (``"backbone."`` of an mmseg or
    change-detection file). ``key`` forces the wrapper entry (e.g. ``"state_dict_ema"``). With
    ``strict=True`` any difference raises :class:`WeightsMismatchError` naming the first mismatches.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, key=key)
    state_dict = checkpoint.state_dict
    if prefix:
        selected = split_prefix(state_dict, prefix)
        if not selected:
            tops = sorted({k.split(".", 1)[0] + "." for k in state_dict if "." in k})
            raise WeightsMismatchError(f"{path} has no entries under {prefix!r}; top-level prefixes: {tops}")
        state_dict = selected
    original_keys = list(state_dict)

    already_ours = checkpoint.metadata.get(_LAYOUT_KEY) == _LAYOUT_VALUE
    if family is None and model is not None:
        family = infer_family(model)
    if family is None and _FAMILY_KEY in checkpoint.metadata:
        family = json.loads(checkpoint.metadata[_FAMILY_KEY])
    if not already_ours:
        state_dict = convert_state_dict(state_dict, family, model)

    result = LoadResult(
        state_dict=state_dict, format=checkpoint.format, metadata=checkpoint.metadata, family=family
    )
    if model is None:
        return result
    state_dict = align_feature_names(state_dict, model.state_dict().keys())
    state_dict, result.adapted_keys, result.ignored_keys = fit_to_model(state_dict, model)
    result.state_dict = state_dict
    result.missing_keys, result.unexpected_keys, result.mismatched_keys = _compare(state_dict, model)
    if strict and not result.ok:
        raise WeightsMismatchError(_mismatch_message(path, result, model, original_keys))
    return result


def load_into(
    model: nn.Module,
    path: str | os.PathLike[str],
    strict: bool = False,
    *,
    family: str | None = None,
    prefix: str | None = None,
    key: str | None = None,
) -> LoadResult:
    """:func:`load`, then copy the weights into ``model``.

    Non-strict loading (a partial load) copies every entry whose name and shape match and reports the
    rest (e.g. a classifier for another class count); strict loading copies all or nothing. Either way
    a file of which no entry fits the model (weights of another architecture) is refused, since going
    on would silently leave the model random.

    Raises:
        WeightsMismatchError: ``strict`` and the file differs from the model, or nothing fits at all.
    """
    result = load(path, model=model, family=family, strict=strict, prefix=prefix, key=key)
    skip = {k for k, _, _ in result.mismatched_keys} | set(result.unexpected_keys)
    usable = {k: v for k, v in result.state_dict.items() if k not in skip}
    wanted = model.state_dict()
    if wanted and not any(k in wanted for k in usable):
        raise WeightsMismatchError(
            f"{path} fits none of the {len(wanted)} entries of {type(model).__name__}; it holds weights "
            f"of another architecture (or needs prefix=/family=): {result.summary(limit=3)}"
        )
    model.load_state_dict(usable, strict=strict)
    return result


def load_starting_weights(
    model: nn.Module,
    weights: str | os.PathLike[str] | None = None,
    backbone_weights: str | os.PathLike[str] | None = None,
) -> None:
    """Where a task model starts.

    Whole-model ``weights`` (e.g. an official or exported checkpoint), then
    ``backbone_weights`` into ``model.backbone`` alone (e.g. a pretrained RSP backbone); both non-strict.
    """
    if weights:
        load_into(model, weights)
    if backbone_weights:
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ValueError("backbone_weights given but the model has no 'backbone' module")
        load_into(backbone, backbone_weights)


# ----------------------------------------------------------------------------------------------
# Conversion of files
# ----------------------------------------------------------------------------------------------


# Checkpoint metadata entries carried into converted files (JSON strings), and their new names.
_CARRIED_METADATA = {
    "source_key": "source_key",
    "module_class": "source_module_class",
    "config": "source_config",
    "palette": "palette",
}


def _metadata_from_checkpoint(checkpoint_metadata: Mapping[str, str]) -> WeightsMetadata:
    """What a source file tells about itself, as :class:`WeightsMetadata`."""
    if checkpoint_metadata.get(_LAYOUT_KEY) == _LAYOUT_VALUE:
        return WeightsMetadata.from_safetensors(checkpoint_metadata)
    classes = checkpoint_metadata.get("classes")
    meta = WeightsMetadata(classes=tuple(json.loads(classes)) if classes else None)
    for name, new_name in _CARRIED_METADATA.items():
        if name in checkpoint_metadata:
            raw = checkpoint_metadata[name]
            try:
                meta.extra[new_name] = json.loads(raw)
            except ValueError:
                meta.extra[new_name] = raw
    return meta


def _merge_metadata(given: WeightsMetadata | None, derived: WeightsMetadata) -> WeightsMetadata:
    if given is None:
        return derived
    fields = {name: getattr(given, name) for name in _FIELD_KEYS}
    for name, value in fields.items():
        if value is None:
            fields[name] = getattr(derived, name)
    return WeightsMetadata(**fields, extra={**derived.extra, **given.extra})


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    family: str | None = None,
    metadata: WeightsMetadata | None = None,
    *,
    prefix: str | None = None,
    key: str | None = None,
) -> LoadResult:
    """Convert any supported checkpoint to a safetensors file in our layout (written atomically).

    Without ``family`` it is guessed from the key names; a file whose family cannot be guessed is
    copied with its names unchanged (a shared ``module.`` prefix removed). Fields of ``metadata`` left
    ``None`` are filled from what the source tells (classes of an mmseg file, the config of an RSP
    file, an rsvit file's metadata).
    """
    src, dst = Path(src), Path(dst)
    checkpoint = read_checkpoint(src, key=key)
    state_dict = checkpoint.state_dict
    if prefix:
        state_dict = split_prefix(state_dict, prefix)
        if not state_dict:
            raise WeightsMismatchError(f"{src} has no entries under {prefix!r}")
    if family is None:
        family = guess_family(state_dict)
    if checkpoint.metadata.get(_LAYOUT_KEY) != _LAYOUT_VALUE:
        state_dict = convert_state_dict(state_dict, family)
    metadata = _merge_metadata(metadata, _metadata_from_checkpoint(checkpoint.metadata))
    metadata.extra.setdefault("source_format", checkpoint.format)
    save(dst, state_dict, metadata, family=family)
    return LoadResult(
        state_dict=state_dict, format=checkpoint.format, metadata=checkpoint.metadata, family=family
    )


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run_convert(args: argparse.Namespace) -> int:
    """Run ``rsvit convert`` from parsed arguments; returns the process exit code."""
    try:
        if args.family is not None and args.family not in available_families():
            raise WeightsError(
                f"unknown --family {args.family!r}; choose one of {', '.join(available_families())}"
            )
        metadata = WeightsMetadata(
            architecture=args.architecture,
            input_size=tuple(int(v) for v in _csv(args.input_size)) if args.input_size else None,
            mean=tuple(float(v) for v in _csv(args.mean)) if args.mean else None,
            std=tuple(float(v) for v in _csv(args.std)) if args.std else None,
            band_names=tuple(_csv(args.band_names)) if args.band_names else None,
            classes=tuple(_csv(args.classes)) if args.classes else None,
        )
        result = convert_file(
            args.src, args.dst, family=args.family, metadata=metadata, prefix=args.prefix, key=args.key
        )
    except (WeightsError, FileNotFoundError, ValueError) as exc:
        print(f"rsvit convert: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.dst}: {len(result.state_dict)} tensors from a {result.format} file "
        f"(family {result.family or '-'})"
    )
    return 0
