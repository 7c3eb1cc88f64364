"""SegmentationTask: loss with the auxiliary term, metrics, schedule, sliding window, reports, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rsvit.datamodules.segmentation import SegmentationDataModule
from rsvit.metrics.segmentation import confusion_metrics
from rsvit.models import ModelSpec, load_model
from rsvit.tasks.optim import weight_decay_groups
from rsvit.tasks.segmentation import SegmentationReport, SegmentationTask, poly_lr_factor, segmentation_loss
from rsvit.tasks.segmentation_predict import SegmentationPredictionWriter

TINY = {"backbone": "resnet18", "head": "upernet", "head_kwargs": {"channels": 16, "aux_channels": 8}}
CLASSES = ["ground", "roof", "tree"]
PALETTE = [[200, 200, 200], [200, 0, 0], [0, 160, 0]]


def _hand_ce(logits: np.ndarray, target: np.ndarray, ignore: int) -> np.ndarray:
    """Per-pixel cross-entropy (0 where ignored), written out: logsumexp - logit of the true class."""
    b, _, h, w = logits.shape
    out = np.zeros((b, h, w))
    for i in range(b):
        for y in range(h):
            for x in range(w):
                t = target[i, y, x]
                if t == ignore:
                    continue
                z = logits[i, :, y, x]
                out[i, y, x] = math.log(sum(math.exp(v) for v in z)) - z[t]
    return out


def test_loss_adds_the_auxiliary_term_with_weight_0_4() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    aux = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :3] = 255
    valid = int((target != 255).sum())
    main_ce = _hand_ce(logits.numpy(), target.numpy(), 255)
    aux_ce = _hand_ce(aux.numpy(), target.numpy(), 255)

    total, parts = segmentation_loss(logits, target, aux, 0.4, 255)
    assert parts["decode"].item() == pytest.approx(main_ce.sum() / valid, rel=1e-5)
    assert parts["aux"].item() == pytest.approx(aux_ce.sum() / valid, rel=1e-5)
    assert total.item() == pytest.approx((main_ce.sum() + 0.4 * aux_ce.sum()) / valid, rel=1e-5)
    # mmseg 0.21 averages over every pixel, ignored ones counting zero.
    total_all, _ = segmentation_loss(logits, target, aux, 0.4, 255, avg_non_ignore=False)
    assert total_all.item() == pytest.approx((main_ce.sum() + 0.4 * aux_ce.sum()) / target.numel(), rel=1e-5)
    # All pixels ignored: zero, not NaN.
    assert segmentation_loss(logits, torch.full_like(target, 255))[0].item() == 0.0


class _FixedOutputs(nn.Module):
    """Stands in for a segmentor: returns given decode and auxiliary logits."""

    def __init__(self, main: torch.Tensor, aux: torch.Tensor) -> None:
        super().__init__()
        self.main, self.aux = main, aux
        self.num_classes = main.shape[1]
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main * self.scale

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.main * self.scale, self.aux * self.scale


def test_task_training_loss_uses_the_auxiliary_head() -> None:
    g = torch.Generator().manual_seed(1)
    main, aux = torch.randn(1, 3, 3, 3, generator=g), torch.randn(1, 3, 3, 3, generator=g)
    target = torch.randint(0, 3, (1, 3, 3), generator=g)
    task = SegmentationTask(_FixedOutputs(main, aux), warmup_iters=0)
    loss, parts = task.training_loss({"image": torch.zeros(1, 3, 3, 3), "mask": target})
    hand = (
        _hand_ce(main.numpy(), target.numpy(), 255).mean()
        + 0.4 * _hand_ce(aux.numpy(), target.numpy(), 255).mean()
    )
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    assert set(parts) == {"decode", "aux"}
    task0 = SegmentationTask(_FixedOutputs(main, aux), aux_weight=0.0)
    assert task0.training_loss({"image": torch.zeros(1, 3, 3, 3), "mask": target})[0].item() == pytest.approx(
        _hand_ce(main.numpy(), target.numpy(), 255).mean(), rel=1e-5
    )


def test_metrics_against_a_hand_computed_confusion_matrix() -> None:
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 255, 3]])
    preds = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 0, 1, 1]])
    task = SegmentationTask({**TINY, "num_classes": 4}, class_names=["a", "b", "c", "d"])
    task.val_confusion.update(preds, target)
    cm = task.val_confusion.compute()
    # rows: true class, columns: predicted; the 255 pixel is left out
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 1, 0, 0]]
    m = confusion_metrics(cm, ["a", "b", "c", "d"])
    # a: tp 2, fp 1, fn 1 -> IoU 2/4; b: tp 1, fp 2, fn 1 -> 1/4; c: tp 2, fp 1, fn 1 -> 2/4;
    # d: tp 0, fn 1 -> 0
    assert [m["per_class"][k]["IoU"] for k in "abcd"] == pytest.approx([0.5, 0.25, 0.5, 0.0])
    assert [m["per_class"][k]["precision"] for k in "abcd"] == pytest.approx([2 / 3, 1 / 3, 2 / 3, 0.0])
    assert [m["per_class"][k]["recall"] for k in "abcd"] == pytest.approx([2 / 3, 1 / 2, 2 / 3, 0.0])
    f1_b = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert [m["per_class"][k]["F1"] for k in "abcd"] == pytest.approx([2 / 3, f1_b, 2 / 3, 0.0])
    assert m["mIoU"] == pytest.approx(1.25 / 4)
    assert m["mF1"] == pytest.approx((4 / 3 + f1_b) / 4)
    assert m["OA"] == pytest.approx(5 / 9)


def test_absent_classes_are_left_out_of_the_means() -> None:
    cm = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    m = confusion_metrics(cm)
    assert math.isnan(m["per_class"]["2"]["IoU"])
    assert m["mIoU"] == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_poly_schedule_with_warmup() -> None:
    assert poly_lr_factor(0, 100, 1.0, 0.0, 10, 1e-6) == pytest.approx(1e-6)
    # step 5 of 10 warm-up: poly 0.95, scaled by 1 - 0.5 * (1 - 1e-6)
    assert poly_lr_factor(5, 100, 1.0, 0.0, 10, 1e-6) == pytest.approx(0.95 * (0.5 + 0.5e-6))
    assert poly_lr_factor(50, 100, 1.0) == pytest.approx(0.5)
    assert poly_lr_factor(50, 100, 0.9, min_ratio=0.01) == pytest.approx(0.99 * 0.5**0.9 + 0.01)
    assert poly_lr_factor(100, 100, 0.9, min_ratio=0.01) == pytest.approx(0.01)


def test_no_decay_keywords_and_spec_overrides() -> None:
    task = SegmentationTask({**TINY, "num_classes": 2}, num_classes=3, in_chans=4, no_decay_keywords=["bn"])
    assert task.spec is not None and task.spec.num_classes == 3 and task.spec.in_chans == 4
    assert task.hparams["model"]["num_classes"] == 3
    groups = [
        {"params": g["params"], **{k: v for k, v in g.items() if k != "params"}}
        for g in weight_decay_groups(task.model, ["bn"])
    ]
    names = {id(p): n for n, p in task.model.named_parameters()}
    assert all("bn" in names[id(p)] for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert not any("bn" in names[id(p)] for p in groups[0]["params"])
    with pytest.raises(ValueError, match="segmentation model spec"):
        SegmentationTask(ModelSpec("classification", "resnet18", num_classes=2))


def test_sliding_window_evaluation_path() -> None:
    torch.manual_seed(0)
    task = SegmentationTask(
        {**TINY, "num_classes": 3}, eval_mode="slide", slide_crop=32, slide_stride=24
    ).eval()
    x = torch.randn(1, 3, 48, 56)
    with torch.no_grad():
        slid = task.infer(x)
        expected = task.model.slide_inference(x, 32, 24)
        whole = task.model(x)
    assert torch.allclose(slid, expected, atol=1e-6)
    assert not torch.allclose(slid, whole, atol=1e-3)
    task.hparams.tta_hflip = True
    with torch.no_grad():
        tta = task.infer(x)
        flipped = task.model.slide_inference(x.flip(-1), 32, 24).flip(-1)
    probs = (expected.softmax(1) + flipped.softmax(1)) / 2
    assert torch.allclose(tta.exp(), probs, atol=1e-5)


# -- Lightning runs on a small synthetic folder dataset ------------------------------------------


def _synthetic_folders(root: Path, n: int = 4, size: int = 48) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            labels = np.zeros((size, size), dtype=np.uint8)
            labels[size // 2 :, :] = 1
            labels[:, : size // 3] = 2
            image = np.array(PALETTE, dtype=np.uint8)[labels] // 2 + rng.integers(
                0, 40, (size, size, 3), dtype=np.uint8
            )
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(labels).save(root / "masks" / split / f"{i}.png")


def _datamodule(root: Path) -> SegmentationDataModule:
    return SegmentationDataModule(
        str(root),
        "folders",
        classes=CLASSES,
        palette=PALETTE,
        crop_size=32,
        batch_size=2,
        eval_batch_size=2,
        num_workers=0,
        photometric=False,
    )


def _trainer(root: Path, max_steps: int = 2, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks or [],
    )


def test_fit_exports_a_model_that_reloads_with_the_same_logits(tmp_path: Path) -> None:
    _synthetic_folders(tmp_path / "data")
    dm = _datamodule(tmp_path / "data")
    task = SegmentationTask(
        TINY,
        num_classes=3,
        class_names=CLASSES,
        palette=PALETTE,
        warmup_iters=1,
        eval_mode="slide",
        slide_crop=32,
        slide_stride=16,
        num_plots=2,
    )
    report = SegmentationReport()
    trainer = _trainer(tmp_path / "run", callbacks=[report])
    trainer.fit(task, datamodule=dm)
    run = tmp_path / "run"
    assert report.exported == run / "model.safetensors"
    model, spec, meta = load_model(run / "model.safetensors")
    assert spec == task.spec
    assert meta.classes == tuple(CLASSES) and meta.extra["palette"] == PALETTE
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406)) and meta.input_size == (3, 32, 32)
    assert meta.extra["eval_mode"] == "slide" and meta.extra["slide_crop"] == 32
    assert meta.extra["window"] == 32  # predict-raster's default window
    x = torch.randn(2, 3, 40, 40)
    task.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), task.model(x), atol=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == CLASSES and metrics["val"]["step"] == 2
    assert set(metrics["val"]["per_class"]) == set(CLASSES)
    for key in ("mIoU", "mF1", "mPrecision", "mRecall", "OA"):
        assert 0.0 <= metrics["val"][key] <= 1.0
    assert sum(map(sum, metrics["val"]["confusion"])) == 4 * 48 * 48
    pngs = sorted((run / "val_predictions").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size[0] > 400
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_validate_and_predict_write_reports(tmp_path: Path) -> None:
    _synthetic_folders(tmp_path / "data", n=3, size=40)
    dm = _datamodule(tmp_path / "data")
    task = SegmentationTask(TINY, num_classes=3, class_names=CLASSES, palette=PALETTE, num_plots=1)
    writer = SegmentationPredictionWriter()
    trainer = _trainer(tmp_path / "run", callbacks=[SegmentationReport(), writer])
    trainer.validate(task, datamodule=dm)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]["loss"] > 0
    assert len(list((tmp_path / "run" / "val_predictions").glob("*.png"))) == 1
    trainer.predict(task, datamodule=dm)
    folder = tmp_path / "run" / "predictions"
    assert sorted(p.name for p in folder.iterdir()) == [
        "0.png",
        "0_mask.png",
        "1.png",
        "1_mask.png",
        "2.png",
        "2_mask.png",
    ]
    saved = np.asarray(Image.open(folder / "1_mask.png"))
    sample = dm.dataset("val")[1]
    with torch.no_grad():
        expected = task.eval().infer(sample["image"][None]).argmax(1)[0]
    assert saved.shape == (40, 40) and np.array_equal(saved, expected.numpy())
    side = Image.open(folder / "1.png")
    assert side.size[0] > side.size[1]  # image and prediction side by side


def test_dpt_head_trains_through_the_segmentation_task_with_its_auxiliary_output() -> None:
    """``head: dpt`` is one config change away from UperNet: its own auxiliary output (on the penultimate
    fusion map) joins the loss, and a few steps on a learnable pattern lower it."""
    torch.manual_seed(0)
    spec = {"backbone": "resnet18", "head": "dpt", "num_classes": 3, "head_kwargs": {"features": 16}}
    task = SegmentationTask(spec, warmup_iters=0)
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[0, :, 24:] = 1
    mask[1, 32:] = 2
    colours = torch.tensor([[0.2, 0.5, 0.3], [0.8, 0.2, 0.2], [0.3, 0.3, 0.9]])
    image = colours[mask].permute(0, 3, 1, 2) + 0.05 * torch.randn(2, 3, 64, 64)  # regions of one colour
    main, aux = task._train_outputs(image)
    assert main.shape == aux.shape == (2, 3, 64, 64)
    assert not torch.allclose(main, aux)
    batch = {"image": image, "mask": mask}
    loss, parts = task.training_loss(batch)
    assert set(parts) == {"decode", "aux"}
    assert loss.item() == pytest.approx(parts["decode"].item() + 0.4 * parts["aux"].item(), rel=1e-5)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(20):
        optimizer.zero_grad()
        step_loss, _ = task.training_loss(batch)
        step_loss.backward()
        optimizer.step()
    assert task.training_loss(batch)[0].item() < 0.7 * first
