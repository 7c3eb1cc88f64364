"""Reading the untrusted parts of a model file: its safetensors header and its model description.

A model file (``rsvit.models.save_model``) stores the weights plus a JSON description of the network.
Both come from whoever made the file, so they are read here without touching the tensor data and
checked for shape and plain-data types before ``rsvit.models.load_model`` builds anything from them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from rsvit.errors import ModelSpecError
from rsvit.weights.errors import CheckpointFormatError
from rsvit.weights.formats import sniff_file_kind

__all__ = ["DESCRIPTION_KEY", "ModelFileHeader", "description_problems", "read_description", "read_header"]

#: The safetensors metadata entry holding the model description.
DESCRIPTION_KEY = "model_spec"

# Arguments a file may not pass to a builder: they would make it read or download other files.
_FORBIDDEN_ARGUMENTS = frozenset(
    {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "weights"}
)
# Bounds of the plain data in a description; real ones are a few dozen small values.
_MAX_DEPTH = 8
_MAX_ITEMS = 1024
_MAX_STRING = 1024
_MAX_INT = 1 << 20


@dataclass(frozen=True)
class ModelFileHeader:
    """The metadata strings and tensor shapes of a safetensors file (no tensor data is read)."""

    path: Path
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def read_header(path: str | os.PathLike[str]) -> ModelFileHeader:
    """The header of a model file.

    Raises:
        CheckpointFormatError: not a safetensors file, or one whose header is truncated or not JSON.
    """
    path = Path(path)
    if sniff_file_kind(path) != "safetensors":
        raise CheckpointFormatError(
            f"{path} is not a safetensors file; model files are written by rsvit.models.save_model "
            "(or a training run's export)"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(
            f"{path} looks like a safetensors file but its header cannot be read (truncated or "
            f"corrupted?): {exc}"
        ) from exc
    return ModelFileHeader(path, metadata, shapes)


def read_description(header: ModelFileHeader) -> dict[str, Any]:
    """The model description of a file as plain data, checked by :func:`description_problems`.

    Raises:
        ModelSpecError: the file has none, or it is not a JSON object of plain, bounded values.
    """
    path = header.path
    raw = header.metadata.get(DESCRIPTION_KEY)
    if raw is None:
        raise ModelSpecError(
            f"{path} carries no model description ('{DESCRIPTION_KEY}' metadata); it holds bare weights. "
            "Build the model yourself and use rsvit.weights.load_into, or save it with "
            "rsvit.models.save_model"
        )
    try:
        description = json.loads(raw)
    except ValueError as exc:
        raise ModelSpecError(
            f"{path}: its model description ('{DESCRIPTION_KEY}' metadata) is not valid JSON ({exc}); "
            "the file is damaged or was edited by hand: export the model again"
        ) from exc
    if not isinstance(description, dict):
        raise ModelSpecError(
            f"{path}: its model description ('{DESCRIPTION_KEY}' metadata) is a JSON "
            f"{type(description).__name__}, expected an object with task, backbone, head, ..."
        )
    problems = description_problems(description)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelSpecError(f"{path}: invalid model description: {shown}")
    return description


def description_problems(value: Any, where: str = "", depth: int = 0) -> list[str]:
    """What keeps ``value`` from being a plain, bounded description (empty when it is one)."""
    label = where or "the description"
    if depth > _MAX_DEPTH:
        return [f"{label} is nested deeper than {_MAX_DEPTH} levels"]
    if value is None or isinstance(value, bool | float):
        return []
    if isinstance(value, int):
        return [] if abs(value) <= _MAX_INT else [f"{label} = {value} is out of range (at most {_MAX_INT})"]
    if isinstance(value, str):
        return [] if len(value) <= _MAX_STRING else [f"{label} is a string of {len(value)} characters"]
    if isinstance(value, list):
        if len(value) > _MAX_ITEMS:
            return [f"{label} has {len(value)} items (at most {_MAX_ITEMS})"]
        return [p for i, v in enumerate(value) for p in description_problems(v, f"{label}[{i}]", depth + 1)]
    if isinstance(value, dict):
        if len(value) > _MAX_ITEMS:
            return [f"{label} has {len(value)} entries (at most {_MAX_ITEMS})"]
        problems = []
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if depth > 0 and key in _FORBIDDEN_ARGUMENTS:
                problems.append(f"{name} is not allowed in a model file (it would load or fetch other files)")
            else:
                problems.extend(description_problems(item, name, depth + 1))
        return problems
    return [f"{label} is a {type(value).__name__}, not plain JSON data"]
