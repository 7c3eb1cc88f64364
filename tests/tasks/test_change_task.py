"""Change-detection task on the real LEVIR-CD samples: training, report, export, metrics and configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from rsvit.data.change import ChangeDetectionDataset
from rsvit.metrics.change import ChangeDetectionMetrics
from rsvit.models import load_model
from rsvit.tasks.change import ChangeDetectionTask, ChangeReport, linear_lr_factor
from rsvit.tasks.change_runner import build_change_cli, train_from_config

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "change" / "levir_quick.yaml"
OFFICIAL = REPO / "configs" / "change" / "levir_bit_resnet18.yaml"
VAL_NAMES = ["train_36_0512_0512", "train_386_0512_0768", "train_412_0512_0768", "val_27_0000_0256"]


@pytest.fixture(scope="module")
def trained_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short quick-start fit: all seven demo pairs per step (64 px crops), so losses are comparable."""
    out = tmp_path_factory.mktemp("change_run")
    return train_from_config(
        QUICK,
        [
            f"--data.root={data_dir / 'levir-cd-samples'}",
            "--data.crop_size=64",
            "--data.batch_size=7",
            "--data.train_repeats=1",
            "--trainer.max_steps=20",
            "--trainer.val_check_interval=20",
            "--trainer.log_every_n_steps=1",
            f"--trainer.logger.init_args.save_dir={out}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--model.num_plots=2",
        ],
    )


def test_training_lowers_loss_and_exports(trained_run: Path) -> None:
    with open(trained_run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.03, losses

    report = json.loads((trained_run / "metrics.json").read_text())
    assert report["classes"] == ["no change", "change"]
    assert report["val"]["step"] == 20 and 0.0 <= report["val"]["F1"] <= 1.0
    assert report["best_val"]["F1"] == report["val"]["F1"]
    assert sum(map(sum, report["val"]["confusion"])) == 4 * 256 * 256
    assert len(list((trained_run / "val_predictions").glob("*.png"))) == 2

    model, spec, meta = load_model(trained_run / "model.safetensors")
    assert spec.task == "change" and spec.backbone == "bit_resnet18"
    assert meta.classes == ("no change", "change") and meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5,) * 3
    last = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    task = ChangeDetectionTask(model={"backbone": "bit_resnet18"})
    task.load_state_dict(last["state_dict"])
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b), task.eval()(a, b))


def test_logged_val_f1_matches_metric_by_hand(trained_run: Path, data_dir: Path) -> None:
    import lightning as L

    from rsvit.datamodules.change import ChangeDataModule

    root = data_dir / "levir-cd-samples"
    weights = str(trained_run / "model.safetensors")
    task = ChangeDetectionTask(
        model={"backbone": "bit_resnet18"}, weights=weights, mean=[0.5] * 3, std=[0.5] * 3
    )
    dm = ChangeDataModule(str(root), val_split=VAL_NAMES, eval_batch_size=3, num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(task, datamodule=dm, verbose=False)
    logged = trainer.callback_metrics

    model, _, _ = load_model(weights)
    by_hand = ChangeDetectionMetrics()
    raw = ChangeDetectionDataset(root, names=VAL_NAMES)  # untransformed 0-1 pairs, normalised here
    with torch.no_grad():
        for i in range(len(raw)):
            s = raw[i]
            logits = model((s["image_a"][None] - 0.5) / 0.5, (s["image_b"][None] - 0.5) / 0.5)
            by_hand.update(logits.argmax(1), s["mask"][None])
    expected = by_hand.compute()
    for key in ("F1", "IoU", "precision", "recall", "OA", "per_image/F1"):
        assert float(logged[f"val/{key}"]) == pytest.approx(float(expected[key]), abs=1e-6), key
    assert int(by_hand.confmat.sum()) == 4 * 256 * 256


@pytest.mark.parametrize("config", [QUICK, OFFICIAL], ids=lambda p: p.stem)
def test_configs_load_through_cli(config: Path, data_dir: Path) -> None:
    args = ["--config", str(config), f"--data.root={data_dir / 'levir-cd-samples'}"]
    cli = build_change_cli(args, run=False)
    task, dm = cli.model, cli.datamodule
    assert isinstance(task, ChangeDetectionTask) and task.spec is not None
    assert task.spec.backbone == "bit_resnet18" and task.num_classes == 2
    assert task.class_names == ["no change", "change"] and task.mean == [0.5] * 3 and task.std == [0.5] * 3
    assert any(isinstance(cb, ChangeReport) and cb.monitor == "F1" for cb in cli.trainer.callbacks)
    task.trainer = cli.trainer
    setup = task.configure_optimizers()
    opt = setup["optimizer"]
    assert isinstance(opt, torch.optim.SGD)
    assert (
        opt.defaults["lr"] == 0.01
        and opt.defaults["momentum"] == 0.9
        and opt.defaults["weight_decay"] == 5e-4
    )
    if config == OFFICIAL:
        assert cli.trainer.max_epochs == 200 and dm.batch_size == 8 and dm.hparams.crop_size == 256
        assert setup["lr_scheduler"]["interval"] == "epoch"
    else:
        assert cli.trainer.max_steps == 200 and setup["lr_scheduler"]["interval"] == "step"
        dm.setup("fit")
        assert len(dm.dataset("train")) == 7 and len(dm.dataset("val")) == 4


def test_lr_rule_and_report_monitor() -> None:
    assert linear_lr_factor(0, 200) == 1.0
    assert linear_lr_factor(200, 200) == pytest.approx(1 / 201)
    with pytest.raises(ValueError, match="monitor"):
        ChangeReport(monitor="test/F1")
