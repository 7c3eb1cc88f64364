"""Detection task through the real command line on the DOTA samples: losses, mAP report, export, schedule."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.cli.lightning import train_from_config
from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, read_labels
from rsvit.data.detection.split import parse_patch_name
from rsvit.datamodules.detection import DetectionDataModule
from rsvit.metrics.detection import read_task1_submission
from rsvit.models import load_model
from rsvit.ops import box_iou_rotated
from rsvit.structures.rotated_boxes import poly_to_obb
from rsvit.tasks.detection import DetectionTask, warmup_step_factor

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "detection" / "dota_quick.yaml"
TINY_MODEL = {"backbone": "resnet18", "head_kwargs": {"fpn_channels": 16, "fc_channels": 32}}
LOSSES = ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox")


@pytest.fixture(scope="module")
def patches(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dota_patches")


@pytest.fixture(scope="module")
def trained_run(data_dir: Path, patches: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detection_run")
    return train_from_config(
        QUICK,
        [
            f"--data.root={data_dir / 'dota-samples'}",
            "--data.patch_size=128",
            "--data.gap=32",
            f"--data.split_dir={patches}",
            "--data.batch_size=2",
            "--data.num_workers=0",
            "--model.model.head_kwargs.fpn_channels=16",
            "--model.model.head_kwargs.fc_channels=32",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--trainer.limit_val_batches=2",
            "--trainer.log_every_n_steps=1",
            f"--trainer.logger.init_args.save_dir={out}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--model.num_plots=1",
        ],
    )


def test_fit_logs_finite_losses_and_writes_map_report(trained_run: Path) -> None:
    with open(trained_run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for name in ("loss", *LOSSES):
        values = [float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")]
        assert len(values) == 3 and all(math.isfinite(v) for v in values), (name, values)
    report = json.loads((trained_run / "metrics.json").read_text())
    assert report["classes"] == list(DOTA_V1_0_CLASSES)
    val = report["val"]
    assert val["step"] == 3 and val["images"] == 8  # 2 batches of 4
    assert set(val["per_class"]) == set(DOTA_V1_0_CLASSES)
    assert sum(c["num_gt"] for c in val["per_class"].values()) > 0
    assert val["mAP"] is None or 0.0 <= val["mAP"] <= 1.0
    assert len(list((trained_run / "val_predictions").glob("*.png"))) == 1


def test_exported_model_reloads_and_predicts(trained_run: Path) -> None:
    model, spec, meta = load_model(trained_run / "model.safetensors")
    assert spec.task == "detection" and spec.num_classes == 15
    assert meta.classes == tuple(DOTA_V1_0_CLASSES)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert len(out) == 1 and out[0]["boxes"].shape[-1] == 5
    assert out[0]["scores"].shape == out[0]["labels"].shape


def test_every_loss_falls_on_a_fixed_batch(data_dir: Path, patches: Path) -> None:
    torch.manual_seed(0)
    data = DetectionDataModule(
        str(data_dir / "dota-samples"),
        train_split=".",
        val_split=".",
        patch_size=128,
        gap=32,
        split_dir=str(patches),
        keep_empty=False,
        hflip=0.0,
        vflip=0.0,
    )
    dataset = data.dataset("train")
    assert "patches" in (patches / "split_report.txt").read_text()  # the finished split is marked
    batch = data.collate_fn()([dataset[i] for i in range(2)])
    task = DetectionTask(TINY_MODEL, num_classes=15)
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(8):
        torch.manual_seed(1)  # the same anchor and RoI samples every step
        parts = task.training_losses(batch)
        history.append({k: float(parts[k].detach()) for k in LOSSES})
        optimizer.zero_grad()
        sum(parts[k] for k in LOSSES).backward()
        optimizer.step()
    # From scratch the only positive RoIs are the ground-truth boxes added as proposals, whose box
    # targets are zero: the RoI box loss starts near 0 and grows as proposals improve, so it is only
    # checked to stay finite and small here.
    for name in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls"):
        assert history[-1][name] < history[0][name], (name, [h[name] for h in history])
    assert all(math.isfinite(h["loss_bbox"]) and h["loss_bbox"] < 1.0 for h in history)


def test_warmup_then_steps() -> None:
    assert warmup_step_factor(0, 0, [8, 11]) == pytest.approx(1 / 3)
    assert warmup_step_factor(250, 0, [8, 11]) == pytest.approx(2 / 3)
    assert warmup_step_factor(500, 7, [8, 11]) == 1.0
    assert warmup_step_factor(9000, 8, [8, 11]) == pytest.approx(0.1)
    assert warmup_step_factor(9000, 11, [8, 11]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="milestone_unit"):
        DetectionTask(TINY_MODEL, num_classes=2, milestone_unit="iter")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 class names"):
        DetectionTask(TINY_MODEL, num_classes=2, class_names=["a", "b", "c"])


@pytest.mark.parametrize(
    ("name", "backbone", "optimizer", "lr", "milestones", "classes"),
    [
        ("dota_orcn_resnet50", "resnet50", torch.optim.SGD, 0.005, [8, 11], 15),
        ("dota_orcn_swin_t", "swin_t", torch.optim.AdamW, 1e-4, [8, 11], 15),
        ("dota_orcn_vitaev2_s", "vitaev2_s", torch.optim.AdamW, 1e-4, [8, 11], 15),
        ("hrsc_orcn_resnet50", "resnet50", torch.optim.SGD, 0.005, [24, 33], 1),
    ],
)
def test_paper_configs_build_the_official_setup(name, backbone, optimizer, lr, milestones, classes) -> None:
    from rsvit.cli.lightning import build_cli

    cli = build_cli(["--config", str(REPO / "configs" / "detection" / f"{name}.yaml")], run=False)
    task = cli.model
    assert isinstance(task, DetectionTask) and task.spec.backbone == backbone
    assert task.num_classes == classes and list(task.hparams.milestones) == milestones
    assert cli.trainer.gradient_clip_val == 35
    opt = task.configure_optimizers()["optimizer"]
    assert isinstance(opt, optimizer) and opt.param_groups[0]["lr"] == pytest.approx(
        lr / 3 if lr == 0.005 else lr * 1e-3
    )
    if optimizer is torch.optim.AdamW:  # no decay on norms and position tables, as the official configs
        assert len(opt.param_groups) == 2 and opt.param_groups[1]["weight_decay"] == 0.0


def _predict(data_dir: Path, trained_run: Path, out: Path, *extra: str) -> int:
    """Lightning ``predict`` on the DOTA samples with the tiny trained model, writing to ``out``."""
    from rsvit.cli.lightning import run_lightning

    return run_lightning(
        [
            "predict",
            "--config",
            str(QUICK),
            f"--data.root={data_dir / 'dota-samples'}",
            "--data.num_workers=0",
            "--model.model.head_kwargs.fpn_channels=16",
            "--model.model.head_kwargs.fc_channels=32",
            f"--model.weights={trained_run / 'model.safetensors'}",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={out}",  # where the CLI saves config.yaml
            "--trainer.enable_progress_bar=false",
            f"--prediction_writer.output_dir={out}",
            *extra,
        ]
    )


def test_predict_writes_drawings_and_merged_task1_submission(
    trained_run: Path, data_dir: Path, patches: Path, tmp_path: Path
) -> None:
    rc = _predict(
        data_dir,
        trained_run,
        tmp_path,
        "--data.patch_size=128",
        "--data.gap=32",
        f"--data.split_dir={patches}",
        "--data.eval_batch_size=2",
        "--trainer.limit_predict_batches=2",
        "--prediction_writer.plot_score=0.0",
    )
    assert rc == 0
    drawings = sorted(tmp_path.glob("*.png"))
    assert len(drawings) == 4 and all("__" in p.stem for p in drawings)  # 2 batches of 2 patches
    submission = read_task1_submission(tmp_path / "task1", DOTA_V1_0_CLASSES)
    assert len(list((tmp_path / "task1").glob("Task1_*.txt"))) == 15
    ids = {d[0] for dets in submission.values() for d in dets}
    assert ids <= {"P0706", "P1888"}  # patches merged back into whole images
    # Per-image DOTA text: the same detections, with their scores, highest first.
    texts = sorted((tmp_path / "dota").glob("*.txt"))
    assert ids <= {p.stem for p in texts} <= {"P0706", "P1888"} and texts
    for path in texts:
        dets = read_labels(path, classes=DOTA_V1_0_CLASSES, check_geometry=False)
        assert dets.scores is not None and (np.diff(dets.scores) <= 0).all()
        expected = sorted((name, d[1]) for name, ds in submission.items() for d in ds if d[0] == path.stem)
        got = sorted(zip(dets.classes, dets.scores.tolist(), strict=True))
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert np.allclose([g[1] for g in got], [e[1] for e in expected], rtol=1e-5, atol=0)


def test_patch_without_objects_trains(data_dir: Path, patches: Path) -> None:
    data = DetectionDataModule(
        str(data_dir / "dota-samples"), ".", ".", patch_size=128, gap=32, split_dir=str(patches)
    )
    dataset = data.dataset("train")
    batch = data.collate_fn()([dataset[0], dataset[1]])
    batch["boxes"][1] = torch.zeros(0, 5)
    batch["labels"][1] = torch.zeros(0, dtype=torch.long)
    task = DetectionTask(TINY_MODEL, num_classes=15)
    parts = task.training_losses(batch)
    assert all(math.isfinite(float(parts[k].detach())) for k in LOSSES)
    sum(parts[k] for k in LOSSES).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in task.model.parameters())


def test_detections_of_resized_images_go_back_to_file_pixels() -> None:
    from rsvit.tasks.detection import _scale_factor, _to_file_pixels

    batch = {"scale_factor": [(1.0, 1.0), (0.5, 0.25)]}
    boxes = torch.tensor([[40.0, 20.0, 10.0, 10.0, 0.0], [10.0, 8.0, 6.0, 2.0, 0.0]])
    assert torch.equal(_to_file_pixels(boxes, _scale_factor(batch, 0)), boxes)
    back = _to_file_pixels(boxes, _scale_factor(batch, 1))
    assert torch.allclose(back[:, :2], torch.tensor([[80.0, 80.0], [20.0, 32.0]]))
    assert torch.allclose(back[:, 2:4].sort(dim=1).values, torch.tensor([[20.0, 40.0], [8.0, 12.0]]))
    assert _scale_factor({}, 0).tolist() == [1.0] * 8


def test_predict_over_whole_dota_images_splits_detects_and_merges(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    rc = _predict(
        data_dir,
        trained_run,
        tmp_path,
        "--data.predict_split=.",  # the two whole images, split into patches on the fly
        "--data.patch_size=512",
        "--data.gap=128",
        f"--data.split_dir={tmp_path / 'patches'}",
        "--data.eval_batch_size=4",
        "--prediction_writer.draw=false",
    )
    assert rc == 0
    names = [p.stem for p in (tmp_path / "patches" / "images").glob("*.png")]
    assert {parse_patch_name(n)[0] for n in names} == {"P0706", "P1888"}
    submission = read_task1_submission(tmp_path / "task1", DOTA_V1_0_CLASSES)
    for image_id in ("P0706", "P1888"):
        width, height = Image.open(data_dir / "dota-samples" / "images" / f"{image_id}.png").size
        dets = read_labels(
            tmp_path / "dota" / f"{image_id}.txt", classes=DOTA_V1_0_CLASSES, check_geometry=False
        )
        assert len(dets) > 0 and dets.scores is not None
        assert ((dets.scores > 0) & (dets.scores <= 1)).all() and (np.diff(dets.scores) <= 0).all()
        # Boxes in whole-image pixels: centres inside the image, spread beyond the first patch.
        boxes = poly_to_obb(torch.from_numpy(dets.polygons))
        assert (
            (boxes[:, 0] > -1) & (boxes[:, 0] < width + 1) & (boxes[:, 1] > -1) & (boxes[:, 1] < height + 1)
        ).all()
        assert boxes[:, 0].max() > 512 + 8 and boxes[:, 1].max() > 512 + 8
        # Merged across patch overlaps: no two boxes of a class overlap at or above the merge IoU.
        labels = torch.tensor(dets.labels(DOTA_V1_0_CLASSES))
        iou = box_iou_rotated(boxes.float(), boxes.float())
        same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
        assert not bool((iou[same] >= 0.1 + 1e-4).any())
        # The per-image text and the Task1 files list the same detections.
        in_task1 = sum(1 for ds in submission.values() for d in ds if d[0] == image_id)
        assert in_task1 == len(dets)
