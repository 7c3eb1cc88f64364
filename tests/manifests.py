"""State dicts shaped like the official checkpoints, built from the key manifests in shared/reference/keys."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

Row = tuple[str, tuple[int, ...], torch.dtype]


def manifest_rows(reference_dir: Path, name: str) -> list[Row]:
    """(key, shape, dtype) of every entry of ``keys/<name>.tsv``, in state-dict order."""
    path = reference_dir / "keys" / (name if name.endswith(".tsv") else f"{name}.tsv")
    rows = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(json.loads(shape)), getattr(torch, dtype)))
    return rows


def zero_views(rows: list[Row]) -> OrderedDict:
    """Zero tensors of the given shapes as broadcast views (files of a few kilobytes)."""
    return OrderedDict((key, torch.zeros((), dtype=dtype).expand(shape)) for key, shape, dtype in rows)


def manifest_state_dict(reference_dir: Path, name: str, fill: str = "zeros", seed: int = 0) -> OrderedDict:
    """A state dict with the manifest's keys, shapes and dtypes.

    ``fill``: ``"zeros"``; ``"view"`` (zero broadcast views: files of a few kilobytes); ``"random"``
    (seeded normal floats, zero integers), so that copies into the wrong place show up in comparisons.
    """
    rows = manifest_rows(reference_dir, name)
    if fill == "view":
        return zero_views(rows)
    gen = torch.Generator().manual_seed(seed)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape, dtype in rows:
        if fill == "random" and dtype.is_floating_point:
            out[key] = torch.randn(shape, generator=gen, dtype=dtype)
        else:
            out[key] = torch.zeros(shape, dtype=dtype)
    return out
