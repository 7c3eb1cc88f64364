"""A tiny open_clip configuration (real CLIP code paths, seconds on a CPU) for the CLIP tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_config(folder: Path, name: str = "rsvit-tiny-clip") -> Path:
    """Writes the config as ``<name>.json`` (open_clip names a config after its file)."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def seeded_tiny_clip(
    folder: Path, seed: int = 0, name: str = "rsvit-tiny-clip"
) -> tuple[str, torch.nn.Module]:
    """Registers the tiny config and builds it with seeded random weights; returns (name, model)."""
    from rsvit.models.clip import build_clip, register_model_config

    registered = register_model_config(write_tiny_config(folder, name))
    torch.manual_seed(seed)
    model = build_clip(registered)
    with torch.no_grad():  # distinct, non-trivial weights everywhere (logit_scale too)
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return registered, model
