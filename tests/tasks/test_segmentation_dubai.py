"""Real-data check: the quick-start config, shortened, trains on Dubai tiles 1-5 and beats the
majority-class baseline on tile 6 while its training loss falls."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from rsvit.cli.lightning import train_from_config
from rsvit.data.segmentation import DubaiDataset
from rsvit.metrics.segmentation import confusion_metrics
from rsvit.models import load_model

REPO = Path(__file__).resolve().parents[2]
STEPS = 30


def _majority_baseline(root: Path) -> float:
    """mIoU of predicting the most frequent validation class everywhere (from the tile-6 masks)."""
    counts = list(DubaiDataset(root, tiles=[6]).class_frequencies().values())
    majority = max(range(len(counts)), key=counts.__getitem__)
    confusion = torch.zeros(len(counts), len(counts), dtype=torch.long)
    confusion[:, majority] = torch.tensor(counts)
    return confusion_metrics(confusion)["mIoU"]


@pytest.mark.slow
def test_quick_start_beats_the_majority_baseline(data_dir: Path, tmp_path: Path) -> None:
    root = data_dir / "dubai-seg"
    run = train_from_config(
        REPO / "configs" / "segmentation" / "dubai_quick.yaml",
        [
            f"--data.root={root}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.max_steps={STEPS}",
            f"--trainer.val_check_interval={STEPS}",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.crop_size=160",
            "--data.num_workers=0",
            "--data.batch_size=4",
            "--model.warmup_iters=5",
        ],
    )
    with (run / "metrics.csv").open() as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= STEPS - 1
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, f"training loss did not fall: {first:.3f} -> {last:.3f}"

    report = json.loads((run / "metrics.json").read_text())
    val = report["val"]
    baseline = _majority_baseline(root)
    summary = f"mIoU {val['mIoU']:.3f} (baseline {baseline:.3f}), mF1 {val['mF1']:.3f}"
    print(f"\nDubai tile 6 after {STEPS} steps: {summary}")
    assert val["step"] == STEPS
    assert sum(map(sum, val["confusion"])) > 6_000_000  # all nine tile-6 images, whole
    assert val["mIoU"] > baseline + 0.05

    _, spec, meta = load_model(run / "model.safetensors")
    assert spec.backbone == "resnet18" and meta.classes is not None and len(meta.classes) == 6
    assert len(meta.extra["palette"]) == 6
    assert (run / "config.yaml").is_file() and list((run / "val_predictions").glob("*.png"))
