"""A prediction job: everything a process needs to predict its share of windows, and its fingerprint.

The job is picklable, so spawned processes receive it whole. Its fingerprint (inputs, window settings, the
output's settings and a digest of the weights) is stored with the partial files, and ``resume`` continues
only a run whose fingerprint is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rsvit.inference.outputs.base import RasterOutput
from rsvit.inference.plan import WindowPlan
from rsvit.inference.reader import SceneReader

__all__ = ["Job", "fingerprint_differences", "inputs_fingerprint"]


@dataclass
class Job:
    """The plan, the readers (one per date), the settled output and how to run the model."""

    plan: WindowPlan
    readers: list[SceneReader]
    output: RasterOutput
    grid: dict[str, Any]
    task: str
    batch_size: int
    bf16: bool
    num_workers: int
    fingerprint: dict[str, Any] = field(default_factory=dict)


def inputs_fingerprint(readers: list[SceneReader], **settings: Any) -> dict[str, Any]:
    """Paths, sizes and modification times of the inputs, followed by ``settings``."""
    inputs = []
    for reader in readers:
        stat = reader.path.stat()
        inputs.append(
            {"path": str(reader.path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
    return {"inputs": inputs, **settings}


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key: old then, new now"`` for every setting of ``new`` that ``old`` does not share."""
    return [
        f"{key}: {old.get(key)!r} then, {new.get(key)!r} now" for key in new if old.get(key) != new.get(key)
    ]
