"""The distillation tasks' lr schedule: warm-up then cosine per optimiser step, constant by default."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from rsvit.models.spec import ModelSpec, build_model, save_model
from rsvit.tasks.distillation import ClassificationDistillationTask, SegmentationDistillationTask
from rsvit.tasks.distillation_encoder import PromptableEncoderDistillationTask
from rsvit.tasks.schedules import step_schedule

BASE_LR, MIN_LR = 1e-3, 1e-5
STUDENT = {"backbone": "resnet18", "num_classes": 3}


@pytest.fixture
def teacher(tmp_path: Path) -> Path:
    spec = ModelSpec("classification", "resnet18", num_classes=3)
    path = tmp_path / "teacher.safetensors"
    save_model(path, build_model(spec), spec)
    return path


def _loader(count: int, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    samples = [
        {"image": torch.randn(3, 32, 32, generator=generator), "label": i % 3, "id": f"s{i}"}
        for i in range(count)
    ]
    return DataLoader(samples, batch_size=batch_size)


class LrRecorder(L.Callback):
    """The lr of every parameter group at each optimiser step, as the step sees it."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.setdefault(trainer.global_step, [g["lr"] for g in trainer.optimizers[0].param_groups])


def _fit(task, steps: int, batches: int, accumulate: int = 1) -> tuple[LrRecorder, L.Trainer]:
    recorder = LrRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder],
    )
    trainer.fit(task, train_dataloaders=_loader(2 * batches, 2))
    return recorder, trainer


def expected_lr(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then half a cosine period down to ``floor``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup)
    return floor + (base - floor) * (1 + math.cos(math.pi * progress)) / 2


def test_the_lr_warms_up_then_follows_a_cosine_to_min_lr(teacher: Path) -> None:
    total, warmup = 12, 4
    task = ClassificationDistillationTask(
        str(teacher), model=STUDENT, scheduler="cosine", warmup_steps=warmup, min_lr=MIN_LR
    )
    recorder, trainer = _fit(task, total, batches=total)
    assert sorted(recorder.lrs) == list(range(total))
    for lrs in recorder.lrs.values():  # both weight-decay groups share the schedule
        assert len(lrs) == 2 and lrs[0] == lrs[1]
    seen = {step: lrs[0] for step, lrs in recorder.lrs.items()}
    assert seen[0] == pytest.approx(BASE_LR / 4, rel=1e-9)  # step 0: a quarter of the way up
    assert seen[1] == pytest.approx(BASE_LR / 2, rel=1e-9)  # mid warm-up
    assert seen[warmup - 1] == pytest.approx(BASE_LR, rel=1e-9)  # end of warm-up
    assert seen[warmup] == pytest.approx(BASE_LR, rel=1e-9)  # the cosine starts at the peak
    assert seen[8] == pytest.approx((BASE_LR + MIN_LR) / 2, rel=1e-9)  # halfway through the decay
    for step, lr in seen.items():
        assert lr == pytest.approx(expected_lr(step, total, warmup, BASE_LR, MIN_LR), rel=1e-9), step
    decay = [seen[step] for step in range(warmup, total)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    # after the last optimiser step the schedule has reached its floor
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(MIN_LR, rel=1e-9)


def test_the_schedule_counts_optimiser_steps_not_batches(teacher: Path) -> None:
    task = ClassificationDistillationTask(str(teacher), model=STUDENT, scheduler="cosine", min_lr=MIN_LR)
    recorder, trainer = _fit(task, 3, batches=6, accumulate=2)  # 6 batches, 3 optimiser steps
    assert trainer.estimated_stepping_batches == 3 and trainer.global_step == 3
    for step, lrs in recorder.lrs.items():
        assert lrs[0] == pytest.approx(expected_lr(step, 3, 0, BASE_LR, MIN_LR), rel=1e-9), step
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(MIN_LR, rel=1e-9)


def test_constant_is_the_default_and_keeps_the_optimiser_alone(teacher: Path) -> None:
    task = ClassificationDistillationTask(str(teacher), model=STUDENT)
    optimizer = task.configure_optimizers()  # no trainer needed: no schedule is made
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [BASE_LR, BASE_LR]

    warm = ClassificationDistillationTask(str(teacher), model=STUDENT, scheduler="constant", warmup_steps=2)
    recorder, _ = _fit(warm, 4, batches=4)
    seen = [lrs[0] for lrs in recorder.lrs.values()]
    assert seen == pytest.approx([BASE_LR / 2, BASE_LR, BASE_LR, BASE_LR], rel=1e-9)


def test_bad_schedule_arguments_are_explained(teacher: Path, tmp_path: Path) -> None:
    for name in ("linear", "Cosine", "poly"):
        with pytest.raises(ValueError, match=f"scheduler must be 'cosine'.*or 'constant'.*got '{name}'"):
            SegmentationDistillationTask(str(teacher), scheduler=name)
        with pytest.raises(ValueError, match=f"scheduler must be 'cosine'.*got '{name}'"):
            PromptableEncoderDistillationTask(str(tmp_path / "no_teacher.pth"), scheduler=name)
    with pytest.raises(ValueError, match="warmup_steps must be 0 or more"):
        ClassificationDistillationTask(str(teacher), model=STUDENT, warmup_steps=-1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ValueError, match=r"min_lr=0\.1 is above the optimiser's lr 0\.01"):
        step_schedule(optimizer, lambda: 10, "cosine", 0, 0.1)
    with pytest.raises(ValueError, match=r"needs a finite run: set trainer\.max_steps"):
        step_schedule(optimizer, lambda: math.inf, "cosine")
