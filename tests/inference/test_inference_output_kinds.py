"""A new output kind plugs into predict_raster with one registration and no edit of the engine.

The kind here stands in for a vector output (boxes of a detector): each window yields a set of points
(pixels whose score is positive), overlapping windows repeat points, and the sink keeps each point once
and writes a JSON list at the end. It runs single-process and through resume like the dense kinds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from rsvit.inference import predict_raster
from rsvit.inference.outputs import (
    ModelFacts,
    OutputRequest,
    Products,
    RasterOutput,
    output_for_task,
    raster_tasks,
    register_output,
    registry,
)
from rsvit.inference.outputs.dense_classes import ClassMapOutput
from rsvit.inference.outputs.dense_values import ValueMapOutput
from rsvit.inference.plan import WindowPlan
from rsvit.inference.writer import PartialFiles
from rsvit.utils.atomic import atomic_write_text


class BrightSpots(nn.Module):
    """Scores a pixel positive where its first band is above 200 (raw 0-255 scaled to 0-1)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(-200.5 / 255))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.bias


class PointSink:
    def __init__(self, plan: WindowPlan, path: Path, create: bool) -> None:
        self.plan, self.path = plan, path
        self.points: set[tuple[int, int]] = set()
        if create or not path.exists():
            path.write_text("")

    def add(self, index: int, result: Any, valid: np.ndarray | None) -> None:
        if result is None:
            return
        win = self.plan.window(index)
        self.points.update((win.y0 + int(r), win.x0 + int(c)) for r, c in result)

    def flush(self) -> None:
        with self.path.open("a") as f:
            f.writelines(f"{r} {c}\n" for r, c in sorted(self.points))
        self.points.clear()

    def close(self) -> None:
        self.points.clear()


@dataclass(frozen=True)
class PointOutput(RasterOutput):
    tasks: ClassVar[dict[str, int]] = {"spots": 1}

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> PointOutput:
        if request.probabilities is not None:
            raise ValueError("spots have no probabilities")
        return cls()

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "points"}

    def split_batch(self, out: Any, inputs: tuple[int, ...]) -> list[Any]:
        return [np.argwhere(window[0].cpu().numpy() > 0) for window in out]

    def open_share(
        self, files: PartialFiles, grid: dict[str, Any], plan: WindowPlan, strips: range, create: bool
    ) -> PointSink:
        return PointSink(plan, files.main, create)

    def partial_paths(self, files: PartialFiles, grid: dict[str, Any]) -> list[Path]:
        return [files.main]

    def merge_share(
        self, source: PartialFiles, target: PartialFiles, grid: dict[str, Any], rows: tuple[int, int]
    ) -> None:
        with target.main.open("a") as f:
            f.write(source.main.read_text())

    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        lines = files.main.read_text().split("\n")
        points = sorted({tuple(map(int, line.split())) for line in lines if line})
        atomic_write_text(request.output, json.dumps(points))
        return Products()


@pytest.fixture
def spots_registered(monkeypatch):
    output_for_task("segmentation")  # the package's own kinds first
    monkeypatch.setattr(registry, "_BY_TASK", dict(registry._BY_TASK))  # undone after the test
    register_output(PointOutput)


def test_the_dense_kinds_are_registered_for_their_tasks():
    assert raster_tasks()[:3] == ("segmentation", "change", "regression")
    assert output_for_task("segmentation") is output_for_task("change") is ClassMapOutput
    assert output_for_task("regression") is ValueMapOutput
    assert output_for_task("classification") is None
    with pytest.raises(ValueError, match="already has an output"):
        register_output(type("Other", (ClassMapOutput,), {"tasks": {"segmentation": 1}}))


def test_a_registered_kind_runs_through_the_engine(tmp_path, write_raster, scene, spots_registered):
    image = scene(300, 260, seed=3)
    path = write_raster(tmp_path / "scene.tif", image)
    expected = sorted(map(tuple, np.argwhere(image[0] > 200).tolist()))
    assert "spots" in raster_tasks() and len(expected) > 10

    report = predict_raster(
        BrightSpots(), path, tmp_path / "spots.json", task="spots", window=96, progress=False
    )
    assert [tuple(p) for p in json.loads((tmp_path / "spots.json").read_text())] == expected
    assert report.windows == len(WindowPlan.create(300, 260, window=96, overlap=24))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "spots.json"]  # partial files gone

    # Interrupted after two strips, then resumed: the same points, and only the rest was run.
    model = BrightSpots()
    calls = {"n": 0}

    def crash(module, args):
        calls["n"] += 1
        if calls["n"] > 8:  # 4 windows per strip, batch 1: strips 0-1 are done
            raise KeyboardInterrupt

    hook = model.register_forward_pre_hook(crash)
    out = tmp_path / "again.json"
    settings = {"task": "spots", "window": 96, "batch_size": 1, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        predict_raster(model, path, out, **settings)
    hook.remove()
    resumed = predict_raster(model, path, out, resume=True, **settings)
    assert resumed.resumed_from == 2
    assert [tuple(p) for p in json.loads(out.read_text())] == expected
    with pytest.raises(ValueError, match="no probabilities"):
        predict_raster(model, path, tmp_path / "p.json", probabilities="uint8", **settings)
