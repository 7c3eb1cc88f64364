"""Change-detection figures: TP/FP/FN colours, panels, legend and atomic PNG output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.data.change import ChangeDetectionDataset
from rsvit.viz.change import CHANGE_COLOURS, change_figure, error_map, save_change_figure, to_class_map

# one pixel of each outcome: TP, FP, FN, TN, and an ignored pixel predicted as change
PRED = torch.tensor([[1, 1, 0, 0, 1]])
MASK = torch.tensor([[1, 0, 1, 0, 255]])
EXPECTED = ["true positive", "false positive", "false negative", "true negative", "ignored"]


def test_colours_are_distinct() -> None:
    assert len(set(CHANGE_COLOURS.values())) == len(CHANGE_COLOURS)


def test_error_map_colours_each_outcome() -> None:
    shown = error_map(PRED, MASK)
    assert shown.dtype == np.uint8 and shown.shape == (1, 5, 3)
    for col, outcome in enumerate(EXPECTED):
        assert tuple(shown[0, col]) == CHANGE_COLOURS[outcome], outcome


def test_logits_are_argmaxed() -> None:
    logits = torch.stack([1 - PRED.float(), PRED.float()])  # (2, 1, 5), class 1 wins where PRED == 1
    assert np.array_equal(to_class_map(logits[None]), PRED.numpy())
    assert np.array_equal(error_map(logits, MASK), error_map(PRED, MASK))
    with pytest.raises(ValueError, match="differ in size"):
        error_map(PRED, MASK[:, :4])
    with pytest.raises(ValueError, match="non-integer"):
        to_class_map(torch.full((2, 2), 0.5))


def test_figure_panels_and_legend() -> None:
    image = torch.rand(3, 1, 5)
    fig = change_figure(image, image, prediction=PRED, mask=MASK)
    axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in axes] == ["date A", "date B", "prediction", "label"]
    assert np.array_equal(np.asarray(axes[2].images[0].get_array()), error_map(PRED, MASK))
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == EXPECTED
    for text, patch in zip(labels, legend.get_patches(), strict=True):
        rgb = tuple(round(v * 255) for v in patch.get_facecolor()[:3])
        assert rgb == CHANGE_COLOURS[text]
    no_label = change_figure(image, image, prediction=PRED)
    assert [ax.get_title() for ax in no_label.axes if ax.images] == ["date A", "date B", "prediction"]
    assert [t.get_text() for t in no_label.legends[0].get_texts()] == ["change", "no change", "ignored"]


def test_dataset_plot_saved_atomically(data_dir: Path, tmp_path: Path) -> None:
    ds = ChangeDetectionDataset(data_dir / "levir-cd-samples", split="demo")
    sample = ds[0]
    prediction = sample["mask"].clone()
    prediction[:, :64] = 1 - prediction[:, :64]  # some false positives and negatives
    fig = ds.plot(sample, prediction=prediction)
    assert fig._suptitle.get_text() == Path(sample["path"]).name
    shown = np.asarray([ax for ax in fig.axes if ax.images][2].images[0].get_array())
    fp = (prediction == 1) & (sample["mask"] == 0)
    assert bool(fp.any())
    assert (shown[fp.numpy()] == CHANGE_COLOURS["false positive"]).all()
    out = tmp_path / "plots" / "pair.png"
    assert save_change_figure(fig, out) == out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 100
    assert [p.name for p in out.parent.iterdir()] == ["pair.png"]
