"""DistillationTask on real images: losses fall, teacher frozen, cache, export, command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from rsvit.cli.lightning import train_from_config
from rsvit.datamodules.unlabelled import UnlabelledDataModule
from rsvit.models.spec import ModelSpec, build_model, load_model, save_model
from rsvit.tasks.distillation import (
    ChangeDistillationTask,
    ClassificationDistillationTask,
    DistillationReport,
    SegmentationDistillationTask,
)
from rsvit.tasks.distillation_cache import file_digest
from rsvit.weights import WeightsMetadata

REPO = Path(__file__).resolve().parents[2]
RSSCN7_CLASSES = ("aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking")


def _save_teacher(path: Path, spec: ModelSpec, classes: tuple[str, ...] | None = None) -> Path:
    model = build_model(spec)
    save_model(path, model, spec, WeightsMetadata(classes=classes, extra={"palette": "teacher's"}))
    return path


@pytest.fixture
def scene_teacher(tmp_path: Path) -> Path:
    spec = ModelSpec("classification", "resnet18", num_classes=7)
    return _save_teacher(tmp_path / "teacher.safetensors", spec, RSSCN7_CLASSES)


def _batch(data_dir: Path, size: int = 48, count: int = 6) -> dict:
    data = UnlabelledDataModule(str(data_dir / "rsscn7-dev"), input_size=size, val_fraction=0.0, seed=1)
    data.setup("fit")
    samples = [data.datasets["train"][i * 97] for i in range(count)]
    return {"image": torch.stack([s["image"] for s in samples]), "id": [s["id"] for s in samples]}


def _losses_during_training(task, batch: dict, steps: int) -> list[dict[str, float]]:
    optimizer = task.configure_optimizers()
    task.train()
    history = []
    for _ in range(steps):
        terms = task.distillation_losses(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


def test_scene_losses_fall_and_the_teacher_stays_frozen(data_dir: Path, scene_teacher: Path) -> None:
    task = ClassificationDistillationTask(
        str(scene_teacher),
        model={"backbone": "resnet18", "num_classes": 7},
        hard_weight=0.5,
        label_weight=0.5,
        feature_weight=1.0,
    )
    batch = _batch(data_dir)
    batch["label"] = torch.tensor([RSSCN7_CLASSES.index(i.split("/")[0]) for i in batch["id"]])
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    history = _losses_during_training(task, batch, steps=6)
    assert set(history[0]) == {"kl", "hard", "label", "feature", "loss"}
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert history[-1]["feature"] < history[0]["feature"]
    assert not task.teacher.training and not any(p.requires_grad for p in task.teacher.parameters())
    for key, value in task.teacher.state_dict().items():  # batch-norm statistics included
        torch.testing.assert_close(value, before[key])
    assert task.class_names == list(RSSCN7_CLASSES)
    assert "teacher" not in "".join(task.state_dict())  # kept out of checkpoints


def test_teacher_mismatch_and_missing_file_are_explained(tmp_path: Path, scene_teacher: Path) -> None:
    with pytest.raises(ValueError, match="num_classes: 7"):
        ClassificationDistillationTask(str(scene_teacher), model={"backbone": "resnet18", "num_classes": 5})
    with pytest.raises(ValueError, match="segmentation teacher"):
        SegmentationDistillationTask(str(scene_teacher), model={"backbone": "resnet18", "num_classes": 7})
    missing = ClassificationDistillationTask(str(tmp_path / "none.safetensors"), model={"num_classes": 7})
    with pytest.raises(FileNotFoundError, match=r"model\.init_args\.teacher"):
        missing.setup("fit")


def test_segmentation_and_change_distil_pixel_wise_with_features(data_dir: Path, tmp_path: Path) -> None:
    seg = ModelSpec("segmentation", "resnet18", "upernet", num_classes=6, head_kwargs={"channels": 16})
    teacher = _save_teacher(tmp_path / "seg.safetensors", seg)
    student = {"backbone": "resnet18", "head": "fcn", "num_classes": 6, "head_kwargs": {"channels": 8}}
    task = SegmentationDistillationTask(str(teacher), model=student, feature_weight=1.0, feature_stages=2)
    batch = _batch(data_dir, size=64, count=2)
    history = _losses_during_training(task, batch, steps=5)
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["kl"] < history[0]["kl"]
    task.eval()
    task.evaluation_step(batch, "val")
    result = task.compute_evaluation("val")
    with torch.no_grad():
        x = batch["image"]
        expected = (task.model(x).argmax(1) == task.teacher(x).argmax(1)).double().mean().item()
    assert dict(result.logged)["agreement"] == pytest.approx(expected)  # over the 2 x 64 x 64 pixels
    assert not task.val_metrics["positions"].update_called  # reset after computing

    change = ModelSpec("change", "bit_resnet18", num_classes=2)
    teacher = _save_teacher(tmp_path / "change.safetensors", change)
    task = ChangeDistillationTask(str(teacher), model=change.to_dict(), feature_weight=1.0)
    pair = {"image_a": batch["image"], "image_b": batch["image"].flip(-1)}
    history = _losses_during_training(task, pair, steps=4)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]


def test_teacher_cache_hits_on_repeat_and_follows_the_teacher(data_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec("classification", "resnet18", num_classes=7)
    teacher = _save_teacher(tmp_path / "teacher.safetensors", spec)
    cache_dir = tmp_path / "cache"
    task = ClassificationDistillationTask(str(teacher), model=spec.to_dict(), cache_dir=str(cache_dir))
    batch = _batch(data_dir, count=3)
    first, _ = task.teacher_outputs(batch, features=False)
    second, _ = task.teacher_outputs(batch, features=False)
    assert (task.cache.misses, task.cache.hits) == (3, 3)
    torch.testing.assert_close(first, second)
    with torch.no_grad():
        torch.testing.assert_close(second, task.teacher(batch["image"]))
    _save_teacher(teacher, spec)  # the teacher changes: new digest, new folder, outputs not reused
    retrained = ClassificationDistillationTask(str(teacher), model=spec.to_dict(), cache_dir=str(cache_dir))
    assert retrained.cache.folder != task.cache.folder
    fresh, _ = retrained.teacher_outputs(batch, features=False)
    assert retrained.cache.hits == 0 and not torch.allclose(fresh, first)


def test_fit_from_unlabelled_raster_exports_a_loadable_student(data_dir: Path, scene_teacher: Path) -> None:
    data = UnlabelledDataModule(
        str(data_dir / "geotiff" / "RGB.byte.tif"),
        input_size=32,
        window_size=64,
        train_windows=8,
        val_windows=4,
        batch_size=4,
        seed=3,
    )
    task = ClassificationDistillationTask(
        str(scene_teacher), model={"backbone": "resnet18", "num_classes": 7}, hard_weight=0.5
    )
    report = DistillationReport()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(scene_teacher.parent),
        callbacks=[report],
    )
    trainer.fit(task, datamodule=data)
    assert report.exported is not None and report.exported.is_file()
    model, spec, meta = load_model(report.exported)
    assert spec == task.spec and meta.classes == RSSCN7_CLASSES
    assert meta.extra["distilled_from"]["sha256"] == file_digest(scene_teacher)
    assert meta.extra["palette"] == "teacher's" and list(meta.input_size) == [3, 32, 32]
    x = torch.stack([data.datasets["val"][i]["image"] for i in range(2)])
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), task.model(x))
    written = json.loads((scene_teacher.parent / "metrics.json").read_text())
    assert 0.0 <= written["val"]["agreement"] <= 1.0


def test_unlabelled_folder_and_raster_sets_are_seeded(data_dir: Path) -> None:
    folder = UnlabelledDataModule(str(data_dir / "rsscn7-dev"), input_size=16, val_fraction=0.1, seed=0)
    folder.setup("fit")
    train, val = folder.datasets["train"], folder.datasets["val"]
    assert len(train) + len(val) == 700 and len(val) == 70  # recursive: 7 class folders x 100 images
    assert not {train[i]["id"] for i in range(len(train))} & {val[i]["id"] for i in range(len(val))}
    assert train[0]["image"].shape == (3, 16, 16) and "/" in train[0]["id"]

    def corners(seed: int) -> list:
        raster = UnlabelledDataModule(
            str(data_dir / "geotiff" / "RGB.byte.tif"), input_size=16, window_size=32, seed=seed
        )
        raster.setup("fit")
        return raster.datasets["train"].corners

    assert corners(0) == corners(0) and corners(0) != corners(1)
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        UnlabelledDataModule(str(data_dir / "README.md")).setup("fit")


def _rsscn7_short(data_dir: Path) -> list[str]:
    """Overrides that shorten an rsscn7 quick-start to 2 batches of 8 images at 32 px, then 2 validated."""
    return [
        f"--data.root={data_dir / 'rsscn7-dev'}",
        "--data.input_size=32",
        "--data.batch_size=8",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
    ]


def test_quick_start_config_runs_through_the_command_line(data_dir: Path, scene_teacher: Path) -> None:
    folder = train_from_config(
        REPO / "configs" / "distillation" / "rsscn7_quick.yaml",
        [
            f"--model.teacher={scene_teacher}",
            *_rsscn7_short(data_dir),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={scene_teacher.parent / 'run'}",
        ],
    )
    _, spec, meta = load_model(folder / "model.safetensors")
    assert spec.backbone == "resnet18" and meta.classes == RSSCN7_CLASSES
    report = json.loads((folder / "metrics.json").read_text())
    assert {"agreement", "accuracy", "teacher_accuracy"} <= set(report["val"])


def test_unlabelled_example_of_the_guide_builds_through_the_command_line(
    data_dir: Path, tmp_path: Path
) -> None:
    import yaml

    from rsvit.cli.lightning import build_cli

    text = (REPO / "docs" / "distillation.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "unlabelled.yaml"
    config.write_text(example)
    assert yaml.safe_load(example)["data"]["class_path"].endswith("UnlabelledDataModule")
    spec = ModelSpec("segmentation", "resnet18", "upernet", num_classes=6, head_kwargs={"channels": 16})
    teacher = _save_teacher(tmp_path / "seg.safetensors", spec)
    cli = build_cli(
        [
            "--config",
            str(config),
            f"--model.teacher={teacher}",
            f"--model.cache_dir={tmp_path / 'cache'}",
            f"--data.path={data_dir / 'geotiff' / 'RGB.byte.tif'}",
            "--data.input_size=64",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    assert isinstance(cli.model, SegmentationDistillationTask) and cli.model.teacher is not None
    assert cli.model.cache is not None and cli.model.projector is not None
    cli.datamodule.setup("fit")
    assert len(cli.datamodule.datasets["train"]) == 4000
    assert cli.datamodule.datasets["train"][0]["image"].shape == (3, 64, 64)


def test_labels_only_baseline_never_runs_the_teacher(data_dir: Path, scene_teacher: Path) -> None:
    task = ClassificationDistillationTask(
        str(scene_teacher), model={"backbone": "resnet18", "num_classes": 7}, kl_weight=0.0, label_weight=1.0
    )

    def refuse(*_: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher ran")

    object.__setattr__(task, "teacher", refuse)
    batch = _batch(data_dir, size=32, count=2)
    with pytest.raises(ValueError, match="no loss term applies"):
        task.distillation_losses(batch)
    batch["label"] = torch.tensor([RSSCN7_CLASSES.index(i.split("/")[0]) for i in batch["id"]])
    terms = task.distillation_losses(batch)
    assert set(terms) == {"label", "loss"} and torch.equal(terms["loss"], terms["label"])


def _distil(args: list[str], save_dir: Path, name: str) -> Path:
    """Runs ``rsvit distill`` with ``args``; returns the run folder."""
    from rsvit.cli import main

    assert main(["distill", *args, f"--trainer.logger.init_args.save_dir={save_dir}"]) == 0
    return save_dir / name / "version_0"


def _three_steps(config: str, teacher: Path, data_root: Path) -> list[str]:
    """Arguments of a quick-start distillation config shortened to 3 steps on 64 px crops, then validated."""
    return [
        "--config",
        str(REPO / "configs" / "distillation" / f"{config}.yaml"),
        f"--model.teacher={teacher}",
        f"--data.root={data_root}",
        "--data.crop_size=64",
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def _assert_three_finite_steps(run: Path) -> None:
    """Every term of the 3 steps logged in the run's ``metrics.csv`` is there and finite."""
    import csv

    with (run / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(rows) == 3
    for row in rows:
        assert all(math.isfinite(float(row[f"train/{k}"])) for k in ("loss", "kl", "label", "feature"))


def _replayed_agreement(
    args: list[str], tmp_path: Path, student: torch.nn.Module, teacher: torch.nn.Module, batches: int
) -> tuple[int, int]:
    """Agreement counts of two loaded model files on the first validation batches of the run's data."""
    from rsvit.cli.lightning import build_cli

    cli = build_cli([*args, "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"], run=False)
    cli.datamodule.setup("fit")
    keys = type(cli.model).image_keys
    agree, total = 0, 0
    with torch.no_grad():
        for _, batch in zip(range(batches), cli.datamodule.val_dataloader(), strict=False):
            inputs = [batch[k] for k in keys]
            logits = student(*inputs)
            assert logits.shape[:2] == (inputs[0].shape[0], cli.model.spec.num_classes)
            assert torch.isfinite(logits).all()
            agree += int((logits.argmax(1) == teacher(*inputs).argmax(1)).sum())
            total += logits.argmax(1).numel()
    return agree, total


def test_classification_run_exports_a_teacher_and_its_distillation_exports_the_student(
    data_dir: Path, tmp_path: Path
) -> None:
    from rsvit.cli import main

    short = [*_rsscn7_short(data_dir), "--trainer.enable_model_summary=false"]
    teacher_config = REPO / "configs" / "classification" / "rsscn7_quick.yaml"
    fit = ["fit", "--config", str(teacher_config), *short]
    assert main([*fit, f"--trainer.logger.init_args.save_dir={tmp_path / 'teacher'}"]) == 0
    teacher_run = tmp_path / "teacher" / "rsscn7_quick" / "version_0"
    teacher_file = teacher_run / "model.safetensors"
    teacher_report = json.loads((teacher_run / "metrics.json").read_text())
    assert teacher_report["model"] == str(teacher_file) and (teacher_run / "confusion_val.png").is_file()
    assert [h["epoch"] for h in teacher_report["history"]] == [0]

    student_config = REPO / "configs" / "distillation" / "rsscn7_quick.yaml"
    distil = ["--config", str(student_config), f"--model.teacher={teacher_file}", *short]
    student_run = _distil(distil, tmp_path / "student", "rsscn7_quick")
    report = json.loads((student_run / "metrics.json").read_text())
    assert report["model"] == str(student_run / "model.safetensors")
    student, spec, meta = load_model(student_run / "model.safetensors")
    teacher, _, teacher_meta = load_model(teacher_file)
    assert spec.backbone == "resnet18" and meta.classes == teacher_meta.classes == RSSCN7_CLASSES
    assert meta.extra["distilled_from"]["sha256"] == file_digest(teacher_file)
    # The exported files reproduce the run's last validation: same images, same agreement.
    agree, total = _replayed_agreement(distil, tmp_path, student, teacher, batches=2)
    assert total == 16 and report["val"]["agreement"] == pytest.approx(agree / total)


def test_change_quick_start_distils_through_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    teacher_file = _save_teacher(tmp_path / "teacher.safetensors", ModelSpec("change", "bit_resnet18"))
    args = _three_steps("levir_quick", teacher_file, data_dir / "levir-cd-samples")
    run = _distil(args, tmp_path / "runs", "levir_quick")
    _assert_three_finite_steps(run)
    report = json.loads((run / "metrics.json").read_text())
    assert {"agreement", "accuracy", "teacher_accuracy"} <= set(report["val"])
    student, spec, meta = load_model(run / "model.safetensors")
    teacher, _, _ = load_model(teacher_file)
    assert spec.task == "change" and spec.backbone == "lcnet_050" and meta.mean == (0.5, 0.5, 0.5)
    # The exported student reproduces the run's validation agreement on the four held-out pairs.
    agree, total = _replayed_agreement(args, tmp_path, student, teacher, batches=1)
    assert total == 4 * 256 * 256 and report["val"]["agreement"] == pytest.approx(agree / total)


def test_segmentation_quick_start_distils_on_dubai_through_the_command_line(
    data_dir: Path, tmp_path: Path
) -> None:
    spec = ModelSpec("segmentation", "resnet18", "upernet", num_classes=6, head_kwargs={"channels": 16})
    teacher_file = _save_teacher(tmp_path / "teacher.safetensors", spec)
    args = _three_steps("dubai_quick", teacher_file, data_dir / "dubai-seg")
    args += ["--data.batch_size=2", "--data.num_workers=0", "--trainer.limit_val_batches=2"]
    run = _distil(args, tmp_path / "runs", "dubai_quick")
    _assert_three_finite_steps(run)
    report = json.loads((run / "metrics.json").read_text())
    student, student_spec, meta = load_model(run / "model.safetensors")
    teacher, _, _ = load_model(teacher_file)
    assert student_spec.backbone == "lcnet_050" and meta.extra["palette"] == "teacher's"
    agree, total = _replayed_agreement(args, tmp_path, student, teacher, batches=2)
    assert total > 0 and report["val"]["agreement"] == pytest.approx(agree / total)


def test_upernet_vitaev2_s_config_builds_with_its_teacher_and_trains_a_step(
    data_dir: Path, tmp_path: Path
) -> None:
    from rsvit.cli.lightning import build_cli

    teacher = ModelSpec("segmentation", "vitaev2_s", "upernet", num_classes=6)
    teacher_file = _save_teacher(tmp_path / "teacher.safetensors", teacher)
    cli = build_cli(
        [
            "--config",
            str(REPO / "configs" / "distillation" / "upernet_vitaev2_s_to_resnet18_potsdam.yaml"),
            f"--model.teacher={teacher_file}",
            f"--data.root={data_dir / 'dubai-seg'}",
            "--data.dataset=dubai",
            "--data.train_split=[1]",
            "--data.val_split=[6]",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    task = cli.model
    assert isinstance(task, SegmentationDistillationTask) and task.teacher_spec == teacher
    # The two deepest ResNet-18 stages (256, 512 channels) are projected onto ViTAEv2-S's (256, 512).
    assert [(c.in_channels, c.out_channels) for c in task.projector.convs] == [(256, 256), (512, 512)]
    assert (task.hparams.scheduler, task.hparams.warmup_steps) == ("cosine", 1500)
    # the step below runs without a trainer, so without the run-length schedule
    task.hparams.scheduler, task.hparams.warmup_steps = "constant", 0
    batch = _batch(data_dir, size=64, count=2)
    batch["mask"] = torch.randint(0, 6, (2, 64, 64))
    history = _losses_during_training(task, batch, steps=1)
    assert set(history[0]) == {"kl", "label", "feature", "loss"}
    assert all(math.isfinite(v) for v in history[0].values())
