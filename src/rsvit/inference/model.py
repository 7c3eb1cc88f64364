"""The model to run: a module or a model file, and what its description says about inputs and windows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["default_window", "expected_bands", "model_digest", "resolve_model"]


def resolve_model(model: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, Any, Any]:
    """``(module in eval mode, ModelSpec or None, WeightsMetadata or None)`` from a module or a path.

    A path is a ``.safetensors`` file written by :func:`rsvit.models.save_model` or a run folder holding
    ``model.safetensors``.
    """
    if isinstance(model, nn.Module):
        return model.eval(), None, None
    from rsvit.models import load_model

    path = Path(model)
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without model.safetensors; pass a training run folder or the "
                ".safetensors file written by rsvit.models.save_model"
            )
        path = candidate
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path} is not an rsvit model file (the .safetensors a training run or rsvit.models.save_model "
            "writes). An official checkpoint holds weights only: build the network with "
            "rsvit.models.build_model, copy them in with rsvit.weights.load_into, then save_model it"
        )
    return load_model(path)


def _first_conv_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            return module.in_channels if isinstance(module, nn.Conv2d) else None
    return None


def expected_bands(model: nn.Module, spec: Any, metadata: Any) -> int | None:
    """Input bands the model wants: from its metadata or spec, else its first convolution (if any)."""
    if metadata is not None and metadata.input_size:
        return int(metadata.input_size[0])
    if metadata is not None and metadata.mean is not None:
        return len(metadata.mean)
    if spec is not None:
        return int(spec.in_chans)
    return _first_conv_channels(model)


def default_window(extra: dict[str, Any]) -> int:
    """The window the model file recommends (``extra["window"]``, an int or a square ``[h, w]``), else 512."""
    window = extra.get("window")
    if isinstance(window, list | tuple) and len(window) == 2 and window[0] == window[1]:
        window = window[0]
    return int(window) if isinstance(window, int) and window > 0 else 512


def model_digest(model: nn.Module) -> str:
    """A digest of the weights, so that ``resume`` never continues a run made with other weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
