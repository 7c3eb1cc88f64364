"""Real-data check: the quick config learns RSSCN7 scenes well above chance (1/7) on held-out images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rsvit.cli.lightning import build_cli

QUICK_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "classification" / "rsscn7_quick.yaml"


@pytest.mark.slow
def test_quick_config_trains_on_rsscn7_dev(data_dir, tmp_path):
    start = time.perf_counter()
    cli = build_cli(
        [
            "--config",
            str(QUICK_CONFIG),
            f"--data.root={data_dir / 'rsscn7-dev'}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.max_epochs=4",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    elapsed = time.perf_counter() - start
    report = json.loads((tmp_path / "rsscn7_quick" / "version_0" / "metrics.json").read_text())
    val = report["val"]
    # Half of each class trains, the other half (350 images) is held out.
    assert sum(map(sum, val["confusion"])) == 350
    print(f"\nRSSCN7-dev held-out top-1 {100 * val['acc1']:.1f} % after 4 epochs in {elapsed:.0f} s")
    assert val["acc1"] > 0.35, f"top-1 {val['acc1']:.3f} is not well above chance (0.143)"
    assert val["acc5"] > 0.85
