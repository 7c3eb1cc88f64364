"""Recognising the wrappings of official checkpoint files and extracting their state dict.

Each upstream project wraps its weights differently (see the reference README): RSP scene
recognition saves ``{'model', 'config', 'optimizer', ...}``, mmcv/mmseg ``{'meta', 'state_dict',
'optimizer'}``, timm training ``{'state_dict', 'state_dict_ema', ...}``, DPT a plain state dict
(or ``{'model': sd}``), BIT ``{'model_G_state_dict', ...}`` and RSP change detection a whole pickled
``nn.Module``. :func:`read_checkpoint` reads any of them safely and says which one it found.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from rsvit.weights.errors import CheckpointFormatError, UnsafeCheckpointError
from rsvit.weights.safe_pickle import (
    PickledObject,
    is_pickled_module,
    is_torchscript_archive,
    module_state_dict,
    safe_torch_load,
    to_plain,
)

__all__ = ["FORMATS", "Checkpoint", "read_checkpoint", "sniff_file_kind", "strip_prefix"]

#: Every value :attr:`Checkpoint.format` can take.
FORMATS = (
    "safetensors",
    "rsp-classification",
    "mmseg",
    "timm-train",
    "dpt",
    "bit",
    "pickled-module",
    "state-dict",
)

# Entries of an mmcv ``meta`` dict worth keeping (JSON, lower-cased names).
_MMCV_META_KEYS = ("CLASSES", "PALETTE", "mmseg_version", "mmcv_version", "mmdet_version", "epoch", "iter")

# Keys tried, in order, when a dict wraps the weights (the dense-task loaders' preference).
_WRAPPER_KEYS = ("state_dict", "state_dict_ema", "model", "model_G_state_dict", "net", "module")


@dataclass
class Checkpoint:
    """The tensors of a checkpoint file in the file's own naming, plus what we learnt about it.

    ``metadata`` holds strings: a safetensors file's own header, or for pickles what the wrapping
    tells (``config``, ``classes``, ``epoch``... as JSON; ``source_key``, ``module_class``, ``reader`` as
    plain text; ``pickled_classes`` lists, as JSON, the foreign classes the restricted reader met).
    """

    state_dict: dict[str, torch.Tensor]
    format: str
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


# ----------------------------------------------------------------------------------------------
# File kinds
# ----------------------------------------------------------------------------------------------

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"%PDF", "a PDF document"),
)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def sniff_file_kind(path: str | os.PathLike[str]) -> str:
    """``"safetensors"``, ``"zip"`` (torch >= 1.6), ``"pickle"`` (legacy torch) or ``"tar"``.

    Anything else raises :class:`CheckpointFormatError` saying what the file seems to be instead.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointFormatError(f"{path} is a directory, expected a checkpoint file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(512)
    expected = "expected a PyTorch checkpoint (.pth/.pt/.bin/.ckpt) or a .safetensors file"
    if size == 0:
        raise CheckpointFormatError(f"{path} is empty (0 bytes); {expected}")
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            raise CheckpointFormatError(f"{path} is {what}, not a checkpoint; {expected}")
    if _is_text(head):
        raise CheckpointFormatError(
            f"{path} is a text file (starts with {head[:40]!r}), not a checkpoint; {expected}"
        )
    raise CheckpointFormatError(f"{path} is not a checkpoint (starts with {head[:16]!r}); {expected}")


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state_dict = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(
            f"{path} looks like a safetensors file but cannot be read (truncated or corrupted?): {exc}"
        ) from exc
    return Checkpoint(state_dict=state_dict, format="safetensors", metadata=metadata, path=path)


def _load_torch_object(path: Path, kind: str) -> tuple[Any, dict[str, str]]:
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointFormatError(
                f"{path} is a damaged zip archive (truncated download?): {exc}; re-download the checkpoint"
            ) from exc
        if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
            raise CheckpointFormatError(
                f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl inside; "
                f"first entries: {names[:5]})"
            )
        if is_torchscript_archive(path):
            raise CheckpointFormatError(
                f"{path} is a TorchScript archive (compiled program), not a weights file; load it with "
                "torch.jit.load in a trusted setting and save model.state_dict() instead"
            )
    try:
        loaded = safe_torch_load(path)
    except (UnsafeCheckpointError, FileNotFoundError):
        raise
    except (
        EOFError,
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OSError,
    ) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "magic number" in message.lower():
            detail = "a pickle that is not a PyTorch checkpoint (wrong magic number)"
        elif isinstance(exc, EOFError) or any(
            hint in message.lower() for hint in ("truncated", "eof", "central directory")
        ):
            detail = "truncated (incomplete download?)"
        else:
            detail = "corrupted or not a PyTorch checkpoint"
        raise CheckpointFormatError(
            f"{path} could not be read: {detail} ({type(exc).__name__}: {message})"
        ) from exc
    info: dict[str, str] = {"reader": "restricted" if loaded.restricted else "weights_only"}
    if loaded.foreign_classes:
        info["pickled_classes"] = json.dumps(list(loaded.foreign_classes))
    return loaded.obj, info


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _tensors_only(obj: Mapping[str, Any], path: Path, where: str) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointFormatError(f"{path}: {where} holds no tensors")
    return {k: v.detach() if v.requires_grad else v for k, v in tensors.items()}


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from the keys that start with it; other keys are kept unchanged."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _dpt_like(keys: Any) -> bool:
    keys = list(keys)
    return any(k.startswith("pretrained.") for k in keys) and any(k.startswith("scratch.") for k in keys)


def _json(value: Any) -> str:
    return json.dumps(to_plain(value), sort_keys=True, default=str)


def _describe_top_level(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))[:12]}"
    if isinstance(obj, PickledObject):
        return f"a pickled {type(obj).pickled_path} object"
    return f"a {type(obj).__name__}"


def _unwrap(obj: Any, path: Path, key: str | None) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """Pick the state dict out of a loaded object and name the wrapping."""
    meta: dict[str, str] = {}
    if is_pickled_module(obj):
        meta["module_class"] = type(obj).pickled_path
        return module_state_dict(obj), "pickled-module", meta
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds {_describe_top_level(obj)}; expected a state dict, a dict wrapping one "
            f"({', '.join(_WRAPPER_KEYS)}) or a pickled nn.Module"
        )

    if key is not None:
        if key not in obj:
            raise CheckpointFormatError(f"{path} has no entry {key!r}; available: {sorted(map(str, obj))}")
        chosen = key
    elif "model" in obj and ("config" in obj or "max_accuracy" in obj):
        chosen = "model"  # RSP scene recognition prefers 'model' (SPEC-rsp-tasks: fine-tuning loader)
    else:
        chosen = next((k for k in _WRAPPER_KEYS if k in obj), None)

    if chosen is None:
        if _is_state_dict(obj):
            fmt = "dpt" if _dpt_like(obj) else "state-dict"
            return _tensors_only(obj, path, "the state dict"), fmt, meta
        raise CheckpointFormatError(
            f"{path} holds {_describe_top_level(obj)}, none of which is a state dict; expected one of "
            f"{list(_WRAPPER_KEYS)} or a plain mapping of names to tensors"
        )

    inner = obj[chosen]
    meta["source_key"] = chosen
    if is_pickled_module(inner):
        meta["module_class"] = type(inner).pickled_path
        state_dict = module_state_dict(inner)
        return state_dict, "pickled-module", meta
    if not _is_state_dict(inner):
        raise CheckpointFormatError(
            f"{path}: entry {chosen!r} is {_describe_top_level(inner)}, not a state dict of tensors"
        )
    state_dict = _tensors_only(inner, path, f"entry {chosen!r}")

    if chosen == "model_G_state_dict":
        fmt = "bit"
        if all(k.startswith("module.") for k in state_dict):
            state_dict = strip_prefix(state_dict, "module.")
            meta["stripped_prefix"] = "module."
        for extra in ("epoch_id", "best_val_acc", "best_epoch_id"):
            if extra in obj:
                meta[extra] = _json(obj[extra])
    elif chosen == "model" and ("config" in obj or "max_accuracy" in obj):
        fmt = "rsp-classification"
        if "config" in obj:
            meta["config"] = _json(obj["config"])
        for extra in ("epoch", "max_accuracy"):
            if extra in obj:
                meta[extra] = _json(obj[extra])
    elif "meta" in obj and chosen == "state_dict":
        fmt = "mmseg"
        raw_meta = to_plain(obj["meta"])
        if isinstance(raw_meta, dict):
            for name in _MMCV_META_KEYS:
                if name in raw_meta:
                    meta[name.lower()] = json.dumps(raw_meta[name], default=str)
    elif chosen in ("state_dict", "state_dict_ema"):
        fmt = "timm-train"
        for extra in ("arch", "epoch"):
            if extra in obj:
                meta[extra] = _json(obj[extra])
    elif _dpt_like(state_dict):
        fmt = "dpt"
    else:
        fmt = "state-dict"
    return state_dict, fmt, meta


def read_checkpoint(path: str | os.PathLike[str], key: str | None = None) -> Checkpoint:
    """Read any supported checkpoint file without running code from it.

    ``key`` forces the wrapper entry to use (e.g. ``"state_dict_ema"``); by default the RSP
    classification ``model`` entry, else ``state_dict`` > ``state_dict_ema`` > ``model`` (the order of the
    official dense-task loaders) > ``model_G_state_dict`` (BIT) > a plain state dict.
    """
    path = Path(path)
    kind = sniff_file_kind(path)
    if kind == "safetensors":
        checkpoint = _read_safetensors(path)
        if key is not None:
            raise CheckpointFormatError(f"{path} is a safetensors file; it has no wrapper entry {key!r}")
        return checkpoint
    obj, info = _load_torch_object(path, kind)
    try:
        state_dict, fmt, meta = _unwrap(obj, path, key)
    except TypeError as exc:  # malformed pickled module (placeholder tree without tensors)
        raise CheckpointFormatError(f"{path}: {exc}") from exc
    return Checkpoint(state_dict=state_dict, format=fmt, metadata={**info, **meta}, path=path)
