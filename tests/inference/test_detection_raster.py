"""Oriented detection on whole GeoTIFFs: windows, merge across overlaps, GeoJSON and DOTA text, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from torch import nn

from rsvit.data.detection.labels import read_labels
from rsvit.inference.engine import predict_raster
from rsvit.inference.plan import WindowPlan
from rsvit.inference.report import RasterWarning
from rsvit.inference.writer import PartialFiles
from rsvit.structures.rotated_boxes import obb_to_poly

NAIP = "geotiff/naip/m_4709963_se_14_1_20200831.tif"
HEIGHT, WIDTH = 160, 200
WINDOW, OVERLAP = 96, 40

# marker id -> (x0, y0, x1, y1) in crop pixels (x1, y1 exclusive); ids 1, 2, 3
MARKERS = {
    1: (60, 40, 80, 52),  # inside the overlap of several windows: seen whole more than once
    2: (90, 100, 100, 110),  # cut by the right edge of the first window column
    3: (150, 20, 166, 44),
}


class MarkerDetector(nn.Module):
    """Finds the painted markers (band 1 full, band 2 empty, band 3 = marker id): one box per marker.

    The box is the marker's pixel extent in the window, scored by its visible area, so a marker cut by a
    window border scores less than the whole one. ``seen`` counts the detections of each marker.
    """

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.num_classes = 2
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.seen: dict[int, int] = {}

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        out = []
        for image in images:
            mask = (image[0] >= 0.999) & (image[1] <= 0.001)
            ids = torch.round(image[2] * 255).long()
            boxes, scores, labels = [], [], []
            for marker in sorted(set(ids[mask].tolist())):
                ys, xs = torch.nonzero(mask & (ids == marker), as_tuple=True)
                x0, x1 = int(xs.min()), int(xs.max()) + 1
                y0, y1 = int(ys.min()), int(ys.max()) + 1
                boxes.append([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0])
                scores.append((x1 - x0) * (y1 - y0) / 1000.0)
                labels.append(marker % 2)
                self.seen[marker] = self.seen.get(marker, 0) + 1
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.tensor(labels, dtype=torch.long),
                }
            )
        return out


@pytest.fixture(scope="module")
def naip_crop(data_dir: Path) -> tuple[np.ndarray, dict]:
    """A crop of the real NAIP scene (4 bands, uint8) and its georeferenced profile."""
    with rasterio.open(data_dir / NAIP) as src:
        window = Window(300, 200, WIDTH, HEIGHT)
        array = src.read(window=window)
        profile = {
            "driver": "GTiff",
            "width": WIDTH,
            "height": HEIGHT,
            "count": src.count,
            "dtype": array.dtype.name,
            "crs": src.crs,
            "transform": src.window_transform(window),
        }
    return array, profile


def _scene(path: Path, crop: tuple[np.ndarray, dict], markers: dict = MARKERS, crs: bool = True) -> Path:
    array, profile = crop
    array = array.copy()
    array[1] = np.maximum(array[1], 1)  # no natural pixel looks like a marker
    for marker, (x0, y0, x1, y1) in markers.items():
        x1, y1 = min(x1, WIDTH), min(y1, HEIGHT)
        array[0, y0:y1, x0:x1] = 255
        array[1, y0:y1, x0:x1] = 0
        array[2, y0:y1, x0:x1] = marker
    profile = dict(profile) if crs else {**profile, "crs": None, "transform": rasterio.Affine.identity()}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _run(model: nn.Module, scene: Path, output: Path, **kwargs) -> object:
    options = {"window": WINDOW, "overlap": OVERLAP, "batch_size": 2, "progress": False, "task": "detection"}
    return predict_raster(model, scene, output, **{**options, **kwargs})


def _corners(box: list[float]) -> np.ndarray:
    return obb_to_poly(torch.tensor([box], dtype=torch.float64)).numpy().reshape(4, 2)


def test_boxes_in_epsg4326_map_back_onto_the_raster_grid(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    model = MarkerDetector()
    report = _run(model, scene, tmp_path / "boxes.geojson", vector=tmp_path / "boxes.txt")

    collection = json.loads((tmp_path / "boxes.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    by_marker = {}
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["class"] == f"class_{props['class_index']}"
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and np.array_equal(ring[0], ring[-1])
        assert np.all(np.round(ring, 7) == ring)  # 7 decimals
        # EPSG:4326 -> raster CRS -> pixel grid: the corners of the box in pixel units
        xs, ys = warp_transform(
            "EPSG:4326", naip_crop[1]["crs"], ring[:-1, 0].tolist(), ring[:-1, 1].tolist()
        )
        cols, rows = ~naip_crop[1]["transform"] @ (np.asarray(xs), np.asarray(ys))
        pixels = np.stack([cols, rows], axis=1)
        box = [props[k] for k in ("cx", "cy", "w", "h", "angle")]
        corners = _corners(box)
        distance = np.abs(pixels[:, None, :] - corners[None, :, :]).max(axis=2).min(axis=1)
        assert distance.max() < 0.02, distance
        x0, y0 = box[0] - box[2] / 2, box[1] - box[3] / 2
        by_marker[(x0, y0, x0 + box[2], y0 + box[3])] = props
    clipped = {k: (x0, y0, min(x1, WIDTH), min(y1, HEIGHT)) for k, (x0, y0, x1, y1) in MARKERS.items()}
    assert sorted(by_marker) == sorted(clipped.values())  # every marker once, at its exact extent
    for marker, extent in clipped.items():
        assert by_marker[extent]["class_index"] == marker % 2
    assert report.features == len(MARKERS)

    labels = read_labels(tmp_path / "boxes.txt")
    assert len(labels) == len(MARKERS)
    # the DOTA text carries the same scores as the GeoJSON, highest first
    geo_scores = [
        f["properties"]["score"] for f in json.loads((tmp_path / "boxes.geojson").read_text())["features"]
    ]
    assert labels.scores is not None and labels.scores.tolist() == geo_scores
    assert all(
        line.split()[-1] == repr(s)
        for line, s in zip((tmp_path / "boxes.txt").read_text().splitlines(), geo_scores, strict=True)
    )
    assert sorted(labels.classes) == sorted(f"class_{m % 2}" for m in MARKERS)
    for poly in labels.polygons.reshape(-1, 4, 2):
        extent = (poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max())
        assert np.allclose(extent, min(clipped.values(), key=lambda e: np.abs(np.subtract(e, extent)).sum()))
    assert not PartialFiles(tmp_path / "boxes.geojson").objects.exists()


def test_a_box_seen_by_overlapping_windows_is_written_once(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    model = MarkerDetector()
    _run(model, scene, tmp_path / "boxes.geojson", vector_crs="raster")
    plan = WindowPlan.create(HEIGHT, WIDTH, WINDOW, OVERLAP)
    x0, y0, x1, y1 = MARKERS[1]
    holding = [w for w in plan if w.x0 <= x0 and x1 <= w.x1 and w.y0 <= y0 and y1 <= w.y1]
    assert len(holding) >= 2 and model.seen[1] >= 2 and model.seen[2] >= 2
    collection = json.loads((tmp_path / "boxes.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == f"urn:ogc:def:crs:EPSG::{naip_crop[1]['crs'].to_epsg()}"
    assert len(collection["features"]) == len(MARKERS)
    whole = [f["properties"] for f in collection["features"] if f["properties"]["cx"] == (90 + 100) / 2]
    assert len(whole) == 1 and whole[0]["w"] == 10  # the whole marker won over the cut one
    # raster CRS coordinates: the transform applied to the pixel corners
    ring = np.asarray(collection["features"][0]["geometry"]["coordinates"][0][:-1])
    props = collection["features"][0]["properties"]
    expected = np.stack(
        naip_crop[1]["transform"] @ _corners([props[k] for k in ("cx", "cy", "w", "h", "angle")]).T, 1
    )
    assert np.abs(ring[:, None] - expected[None]).max(axis=2).min(axis=1).max() < 1e-6


def test_resume_after_an_interruption_gives_the_same_output(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    _run(MarkerDetector(), scene, tmp_path / "whole.geojson", batch_size=1, vector=tmp_path / "whole.txt")
    output = tmp_path / "boxes.geojson"
    plan = WindowPlan.create(HEIGHT, WIDTH, WINDOW, OVERLAP)
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(
            MarkerDetector(fail_on_call=2 * plan.n_cols + 1),
            scene,
            output,
            batch_size=1,
            vector=tmp_path / "b.txt",
        )
    assert not output.exists() and PartialFiles(output).objects.exists()
    report = _run(MarkerDetector(), scene, output, batch_size=1, vector=tmp_path / "b.txt", resume=True)
    assert report.resumed_from >= 1
    assert output.read_text() == (tmp_path / "whole.geojson").read_text()
    assert (tmp_path / "b.txt").read_text() == (tmp_path / "whole.txt").read_text()


def test_no_detection_gives_a_valid_empty_collection(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop, markers={})
    report = _run(MarkerDetector(), scene, tmp_path / "boxes.geojson", vector=tmp_path / "boxes.txt")
    assert json.loads((tmp_path / "boxes.geojson").read_text()) == {
        "type": "FeatureCollection",
        "features": [],
    }
    assert len(read_labels(tmp_path / "boxes.txt")) == 0
    assert report.features == 0


def test_default_window_and_overlap_follow_dota_splits(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    report = predict_raster(MarkerDetector(), scene, tmp_path / "b.geojson", task="detection", progress=False)
    assert (report.window, report.overlap) == (1024, 200)


def test_bad_requests_are_refused_clearly(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    dense = nn.Conv2d(4, 2, 1)
    with pytest.raises(ValueError, match="classes are unknown"):
        _run(dense, scene, tmp_path / "a.geojson")
    dense.num_classes = 2  # a dense model run as a detector: its tensor output is refused
    with pytest.raises(ValueError, match="one dict"):
        _run(dense, scene, tmp_path / "a.geojson")
    with pytest.raises(ValueError, match=r"\.geojson.*\.txt"):
        _run(MarkerDetector(), scene, tmp_path / "a.tif")
    with pytest.raises(ValueError, match="probabilities"):
        _run(MarkerDetector(), scene, tmp_path / "a.geojson", probabilities="uint8")
    bare = _scene(tmp_path / "bare.tif", naip_crop, crs=False)
    model = MarkerDetector()
    with pytest.raises(ValueError, match="no CRS"), pytest.warns(RasterWarning, match="no CRS"):
        _run(model, bare, tmp_path / "a.geojson")
    assert model.calls == 0
    with pytest.warns(RasterWarning, match="no CRS"):
        _run(MarkerDetector(), bare, tmp_path / "pixels.geojson", vector_crs="pixel")
    ring = json.loads((tmp_path / "pixels.geojson").read_text())["features"][0]["geometry"]["coordinates"][0]
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in ring)
    assert not list(tmp_path.glob("a.*")) and not list(tmp_path.glob(".a.*"))


def test_a_detector_file_runs_through_the_command(tmp_path: Path, naip_crop, capsys) -> None:
    """A tiny Oriented R-CNN (random weights) saved with its spec: the command maps and merges its boxes."""
    from rsvit.inference.cli import main
    from rsvit.models import ModelSpec, build_model, save_model
    from rsvit.ops.rotated_iou import box_iou_rotated
    from rsvit.weights.api import WeightsMetadata

    spec = ModelSpec(
        task="detection",
        backbone="resnet18",
        num_classes=2,
        head_kwargs={"fpn_channels": 16, "fc_channels": 16},
    )
    classes = ("car", "ship")
    model_path = tmp_path / "detector.safetensors"
    save_model(
        model_path, build_model(spec), spec, WeightsMetadata(classes=classes, extra={"merge_iou": 0.1})
    )
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    output = tmp_path / "boxes.txt"
    argv = ["--model", str(model_path), "--input", str(scene), "--output", str(output)]
    argv += [
        "--vector",
        str(tmp_path / "boxes.geojson"),
        "--bands",
        "1,2,3",
        "--window",
        "128",
        "--overlap",
        "32",
    ]
    assert main([*argv, "--quiet"]) == 0, capsys.readouterr().err

    labels = read_labels(output, classes=classes)
    features = json.loads((tmp_path / "boxes.geojson").read_text())["features"]
    assert len(labels) == len(features) > 0
    props = [f["properties"] for f in features]
    assert {p["class"] for p in props} <= set(classes)
    assert all(classes[p["class_index"]] == p["class"] for p in props)
    scores = [p["score"] for p in props]
    assert scores == sorted(scores, reverse=True)
    boxes = torch.tensor(
        [[p[k] for k in ("cx", "cy", "w", "h", "angle")] for p in props], dtype=torch.float64
    )
    index = torch.tensor([p["class_index"] for p in props])
    iou = box_iou_rotated(boxes, boxes)
    same = (index[:, None] == index[None, :]) & ~torch.eye(len(props), dtype=torch.bool)
    assert not bool((iou[same] > 0.1 + 1e-6).any())  # merged: no two boxes of a class overlap beyond 0.1
    # the DOTA text holds the same boxes, in the same order
    assert np.allclose(labels.polygons, obb_to_poly(boxes).numpy().reshape(-1, 8), atol=1e-6)

    classifier = ModelSpec(task="classification", backbone="resnet18", num_classes=2)
    save_model(tmp_path / "classifier.safetensors", build_model(classifier), classifier)
    argv[1] = str(tmp_path / "classifier.safetensors")
    argv[5] = str(tmp_path / "other.geojson")
    assert main([*argv, "--quiet"]) == 1
    assert "classification" in capsys.readouterr().err


def test_two_cpu_processes_write_what_one_writes(tmp_path: Path, naip_crop) -> None:
    scene = _scene(tmp_path / "scene.tif", naip_crop)
    _run(MarkerDetector(), scene, tmp_path / "one.geojson", vector=tmp_path / "one.txt")
    _run(
        MarkerDetector(),
        scene,
        tmp_path / "two.geojson",
        vector=tmp_path / "two.txt",
        devices=2,
        accelerator="cpu",
        strategy="ddp_spawn",
    )
    assert (tmp_path / "two.geojson").read_text() == (tmp_path / "one.geojson").read_text()
    assert (tmp_path / "two.txt").read_text() == (tmp_path / "one.txt").read_text()
    assert not list(tmp_path.glob(".two*"))
