"""Shared test fixtures: paths to the reference material and real sample data.

Tests that need ``../shared`` fail (never skip) when it is missing, so a broken checkout
cannot pass CI by silently testing less.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSVIT_SHARED", REPO.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"required test material is missing: {path}. The suite expects the shared folder beside the "
            "checkout (or RSVIT_SHARED pointing at it).",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``shared/reference``: specs, key manifests and numeric fixtures of the official models."""
    return _require(SHARED / "reference")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``shared/data``: real remote-sensing samples (read in place, never copied)."""
    return _require(SHARED / "data")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
