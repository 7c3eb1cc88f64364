"""Change-detection task on the real LEVIR-CD samples: training, report, export, metrics and configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsvit.cli.lightning import build_cli, train_from_config
from rsvit.data.change import ChangeDetectionDataset
from rsvit.metrics.change import ChangeDetectionMetrics
from rsvit.models import load_model
from rsvit.tasks.change import ChangeDetectionTask, ChangeReport, linear_lr_factor

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
    assert meta.extra["window"] == 64  # the training crop: predict-raster's default window for BIT
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
    cli = build_cli(args, run=False)
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


# -- sliding-window evaluation on the 1024x1024 WHU-CD tiles ------------------------------------------------


class ThresholdChange(torch.nn.Module):
    """Per-pixel change model: 'change' where the mean absolute date difference exceeds ``threshold``.

    The threshold sits halfway between two values the uint8 pixels can produce, so no pixel is within
    rounding of the decision and a hand-computed map must agree exactly.
    """

    num_classes = 2

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.calls: list[tuple[int, ...]] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(a.shape))
        score = ((a - b).abs().mean(1, keepdim=True) - self.threshold) * 50
        return torch.cat([torch.zeros_like(score), score], dim=1)


# normalised units: (x - 0.5) / 0.5 doubles differences; 0-1 pixel differences are multiples of 1/765
WHU_STEP = 115.5 / 765


def _whu_pair(data_dir: Path, name: str) -> dict:
    sample = ChangeDetectionDataset(data_dir / "whu-cd-tiles", layout="whu", names=[name])[0]
    assert sample["image_a"].shape == (3, 1024, 1024)
    return sample


def test_slide_logits_equal_whole_image_logits_for_a_per_pixel_model(data_dir: Path) -> None:
    sample = _whu_pair(data_dir, "000121")
    a, b = (sample["image_a"][None] - 0.5) / 0.5, (sample["image_b"][None] - 0.5) / 0.5
    model = ThresholdChange(2 * WHU_STEP)
    task = ChangeDetectionTask(model=model, eval_mode="slide", slide_crop=256, slide_stride=192)
    with torch.no_grad():
        whole = model(a, b)
        model.calls.clear()
        slid = task.infer(a, b)
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-5)
    # starts 0, 192, 384, 576, 768 on each axis: 25 windows of 256 px, four per forward (the default)
    assert sum(shape[0] for shape in model.calls) == 25
    assert {shape[1:] for shape in model.calls} == {(3, 256, 256)}
    # a BIT model pools its tokens over the whole input: windows give other logits than the whole tile
    bit = ChangeDetectionTask(
        model={"backbone": "bit_resnet18"}, eval_mode="slide", slide_crop=256, slide_stride=256
    )
    crop = (..., slice(0, 256), slice(0, 512))
    with torch.no_grad():
        bit_whole, bit_slid = bit.eval()(a[crop], b[crop]), bit.infer(a[crop], b[crop])
        left = bit.model(a[..., :256, :256], b[..., :256, :256])
    assert bit_slid.shape == bit_whole.shape == (1, 2, 256, 512)
    assert not torch.allclose(bit_slid, bit_whole, atol=1e-4)
    torch.testing.assert_close(bit_slid[..., :256], left)


def test_slide_validation_scores_match_a_hand_confusion_matrix(data_dir: Path) -> None:
    import lightning as L

    from rsvit.datamodules.change import ChangeDataModule

    root = data_dir / "whu-cd-tiles"
    model = ThresholdChange(2 * WHU_STEP)
    task = ChangeDetectionTask(model=model, eval_mode="slide", slide_crop=512, slide_stride=384)
    dm = ChangeDataModule(str(root), layout="whu", val_split="*", eval_batch_size=1, num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(task, datamodule=dm, verbose=False)
    logged = trainer.callback_metrics

    cm = np.zeros((2, 2), dtype=np.int64)
    for name in ("000121", "000213", "000241"):
        sample = _whu_pair(data_dir, name)
        diff = (sample["image_a"] - sample["image_b"]).abs().mean(0).numpy()
        prediction = (diff > WHU_STEP).astype(np.int64)
        truth = sample["mask"].numpy()
        cm += np.bincount(2 * truth.ravel() + prediction.ravel(), minlength=4).reshape(2, 2)
    assert task.evaluation["val"]["confusion"] == cm.tolist()
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    assert tp > 0 and fp > 0 and fn > 0  # a map with every kind of pixel
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    expected = {
        "precision": precision,
        "recall": recall,
        "F1": 2 * precision * recall / (precision + recall),
        "IoU": tp / (tp + fp + fn),
        "OA": (tp + tn) / cm.sum(),
    }
    for key, value in expected.items():
        assert float(logged[f"val/{key}"]) == pytest.approx(value, abs=1e-5), key


def test_slide_settings_are_checked() -> None:
    model = ThresholdChange(0.1)
    with pytest.raises(ValueError, match="eval_mode"):
        ChangeDetectionTask(model=model, eval_mode="tiles")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds slide_crop"):
        ChangeDetectionTask(model=model, eval_mode="slide", slide_crop=256, slide_stride=300)


# -- rsvit predict ----------------------------------------------------------------------------------------


def test_predict_command_writes_figures_and_masks(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from rsvit.cli import main

    root = data_dir / "levir-cd-samples"
    names = VAL_NAMES[:2]
    common = [
        "--config",
        str(QUICK),
        f"--data.root={root}",
        f"--data.predict_split=[{','.join(names)}]",
        f"--model.weights={trained_run / 'model.safetensors'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
    ]
    assert main(["predict", *common]) == 0
    assert (
        main(
            [
                "predict",
                *common,
                "--data.predict_labels=false",
                f"--prediction_writer.output_dir={tmp_path / 'unlabelled'}",
            ]
        )
        == 0
    )
    labelled = next((tmp_path / "runs").glob("**/predictions"))

    model, _, _ = load_model(trained_run / "model.safetensors")
    raw = ChangeDetectionDataset(root, names=names)
    for i, name in enumerate(names):
        s = raw[i]
        with torch.no_grad():
            logits = model((s["image_a"][None] - 0.5) / 0.5, (s["image_b"][None] - 0.5) / 0.5)
        expected = logits.argmax(1)[0].numpy().astype("uint8") * 255
        for folder in (labelled, tmp_path / "unlabelled"):
            mask = np.asarray(Image.open(folder / f"{name}_mask.png"))
            assert mask.shape == (256, 256) and set(np.unique(mask).tolist()) <= {0, 255}
            np.testing.assert_array_equal(mask, expected)
        # with the label the figure has a fourth panel (and the prediction shown as TP/FP/FN colours)
        with_label = Image.open(labelled / f"{name}.png")
        without = Image.open(tmp_path / "unlabelled" / f"{name}.png")
        assert with_label.width > without.width and with_label.height == without.height
    assert len(list(labelled.glob("*.png"))) == 4


def test_predict_dataset_reads_labels_only_when_present(data_dir: Path) -> None:
    from rsvit.datamodules.change import ChangeDataModule

    root = str(data_dir / "whu-cd-tiles")
    dm = ChangeDataModule(root, layout="whu", predict_split="*", num_workers=0)
    dm.setup("predict")
    assert len(dm.dataset("predict")) == 3 and "mask" in dm.dataset("predict")[0]
    unlabelled = ChangeDataModule(root, layout="whu", predict_split=["000213"], predict_labels=False)
    sample = unlabelled.dataset("predict")[0]
    assert "mask" not in sample and sample["image_a"].shape == (3, 1024, 1024)
    assert len(unlabelled.predict_dataloader()) == 1
