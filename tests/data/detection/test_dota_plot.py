"""Polygons drawn in class colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, read_labels
from rsvit.viz.detection import class_colors, draw_labels, draw_polygons, save_drawing


def test_class_colours_are_distinct_and_stable() -> None:
    colors = class_colors(DOTA_V1_0_CLASSES)
    assert len(set(colors.values())) == 15
    assert class_colors(DOTA_V1_0_CLASSES) == colors


def test_outlines_use_the_class_colour() -> None:
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    polys = np.array([[10, 10, 30, 10, 30, 30, 10, 30], [40, 20, 70, 20, 70, 50, 40, 50]], dtype=float)
    colors = {"ship": (255, 0, 0), "plane": (0, 0, 255)}
    out = draw_polygons(image, polys, ["ship", "plane"], colors, width=1)
    assert tuple(out[10, 20]) == (255, 0, 0) and tuple(out[20, 10]) == (255, 0, 0)  # edges of the ship
    assert tuple(out[35, 70]) == (0, 0, 255)  # right edge of the plane
    assert tuple(out[20, 20]) == (0, 0, 0) and tuple(out[5, 5]) == (0, 0, 0)  # inside / outside untouched
    assert not image.any()  # input left alone
    with pytest.raises(ValueError, match="same length"):
        draw_polygons(image, polys, ["ship"])


def test_draw_real_labels(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "dota-samples"
    labels = read_labels(root / "labelTxt" / "P1888.txt")
    with Image.open(root / "images" / "P1888.png") as img:
        image = np.asarray(img)
    out = draw_labels(image, labels, show_names=True)
    colors = class_colors()
    x, y = (int(v) for v in labels.polygons[0, :2])
    assert tuple(out[y, x]) == colors[labels.classes[0]]
    save_drawing(tmp_path / "P1888.png", out)
    with Image.open(tmp_path / "P1888.png") as saved:
        assert np.array_equal(np.asarray(saved), out)
