"""SAM's interactive training rounds: clicks from the error region, previous logits as mask prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from rsvit.data.promptable import error_region_points, round_schedule
from rsvit.metrics.promptable import PromptedIoU
from rsvit.tasks.promptable_losses import sam_loss
from tasks import test_promptable_task as tuning

# the fixtures of the fine-tuning tests: the tiny SAM's sizes and weights, a batch of blob images
head_kwargs, fixture_weights = tuning.head_kwargs, tuning.fixture_weights
folders, batch = tuning.folders, tuning.batch
make_task = tuning.make_task


def test_rounds_off_is_the_plain_training_step(head_kwargs: dict, fixture_weights: Path, batch: dict) -> None:
    task = make_task(head_kwargs, fixture_weights, correction_rounds=0)
    torch.manual_seed(3)
    loss, parts = task.training_loss(batch)
    after = torch.rand(4)
    torch.manual_seed(3)  # the step as written before rounds existed: one decoding per image and prompt
    expected, focal = [], []
    embeddings = task.embed(batch["image"], batch["size"])
    for i in range(len(batch["masks"])):
        kind = task.train_kinds[int(torch.randint(len(task.train_kinds), (1,)))]
        logits, iou = task.decode(embeddings[i : i + 1], batch, i, kind)
        valid = batch["labels"][i] != task.hparams.ignore_index
        one, part = sam_loss(logits, iou, batch["masks"][i], valid, 20.0, 1.0, 1.0)
        expected.append(one)
        focal.append(part["focal"])
    torch.testing.assert_close(loss, torch.cat(expected).mean(), rtol=0, atol=0)
    torch.testing.assert_close(parts["focal"], torch.cat(focal).mean(), rtol=0, atol=0)
    torch.testing.assert_close(after, torch.rand(4), rtol=0, atol=0)  # no extra random draws


def test_clicks_lie_in_the_error_region_with_its_label() -> None:
    n = 4000
    target = torch.zeros(n, 6, 8, dtype=torch.bool)
    target[:, 1:5, 1:5] = True
    pred = torch.zeros_like(target)
    pred[:, 1:5, 3:8] = True  # missed: columns 1-2 (8 px); extra: columns 5-7 (12 px, 3 of them unlabelled)
    valid = torch.ones(6, 8, dtype=torch.bool)
    valid[1, 5:8] = False
    pred[-1] = target[-1]  # no error at all
    coords, labels = error_region_points(pred, target, valid, torch.Generator().manual_seed(0))
    assert coords.shape == (n, 1, 2) and labels.shape == (n, 1)
    x, y, label = coords[:-1, 0, 0].long(), coords[:-1, 0, 1].long(), labels[:-1, 0]
    rows = torch.arange(n - 1)
    assert torch.all(valid[y, x])
    assert torch.all(target[rows, y, x] == (label == 1)) and torch.all(pred[rows, y, x] == (label == 0))
    assert labels[-1, 0] == -1
    share = (label == 1).float().mean()  # uniform over 8 missed + 9 valid extra pixels
    assert abs(share - 8 / 17) < 0.03
    assert len(set(zip(x.tolist(), y.tolist(), strict=True))) == 17
    again = error_region_points(pred, target, valid, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], coords) and torch.equal(again[1], labels)


def test_round_schedule_ends_mask_only_and_is_seeded() -> None:
    assert round_schedule(3, 0) == [True] * 3
    assert round_schedule(1, 1) == [True, False]
    schedules = {tuple(round_schedule(8, 2, torch.Generator().manual_seed(s))) for s in range(20)}
    for schedule in schedules:
        assert len(schedule) == 10 and schedule[-1] is False and schedule.count(False) == 2
    assert len(schedules) > 3  # the other mask-only round moves
    one = round_schedule(8, 3, torch.Generator().manual_seed(7))
    assert one == round_schedule(8, 3, torch.Generator().manual_seed(7))


def _recorded_rounds(task: Any, batch: dict, kind: str) -> tuple[Tensor, list[dict], list[Any]]:
    calls: list[dict[str, Any]] = []
    outputs: list[Any] = []
    encoder, decoder = task.model.prompt_encoder, task.model.mask_decoder
    h1 = encoder.register_forward_hook(lambda m, a, kw, out: calls.append(kw), with_kwargs=True)
    h2 = decoder.register_forward_hook(lambda m, a, out: outputs.append(out))
    try:
        embedding = task.embed(batch["image"][:1], batch["size"][:1])
        valid = batch["labels"][0] != task.hparams.ignore_index
        loss, _ = task.rounds_loss(embedding, batch, 0, kind, batch["masks"][0], valid)
    finally:
        h1.remove()
        h2.remove()
    return loss, calls, outputs


@pytest.mark.parametrize("kind", ["box", "point"])
def test_rounds_feed_the_previous_logits_and_add_one_click(
    head_kwargs: dict, fixture_weights: Path, batch: dict, kind: str
) -> None:
    task = make_task(head_kwargs, fixture_weights, correction_rounds=2, mask_only_rounds=1)
    torch.manual_seed(0)
    loss, calls, outputs = _recorded_rounds(task, batch, kind)
    assert len(calls) == 4 and loss.shape == (len(batch["masks"][0]),)
    assert calls[0]["masks"] is None
    first_points = 0 if kind == "box" else 1
    counts = [0 if c["points"] is None else c["points"][0].shape[1] for c in calls]
    assert counts == [first_points, first_points + 1, first_points + 2, first_points + 2]  # last: mask only
    for r in range(1, 4):
        low_res, iou = outputs[r - 1]
        best = iou.argmax(dim=1)
        expected = low_res[torch.arange(len(best)), best][:, None]
        torch.testing.assert_close(calls[r]["masks"], expected, rtol=0, atol=0)
        # no gradient through what a round takes from the one before
        assert calls[r]["masks"].grad_fn is None and not calls[r]["masks"].requires_grad
        assert calls[r]["points"][0].grad_fn is None
        assert (calls[r]["boxes"] is None) == (kind != "box")
    assert outputs[0][0].shape[1] == (3 if kind == "point" else 1)
    assert all(out[0].shape[1] == 1 for out in outputs[1:])  # later rounds: one mask


def test_rounds_loss_is_seeded_and_trains_every_round(
    head_kwargs: dict, fixture_weights: Path, batch: dict
) -> None:
    task = make_task(head_kwargs, fixture_weights, correction_rounds=3, mask_only_rounds=2)
    plain = make_task(head_kwargs, fixture_weights)
    torch.manual_seed(1)
    loss, _ = task.training_loss(batch)
    torch.manual_seed(1)
    again, _ = task.training_loss(batch)
    torch.manual_seed(1)
    first_only, _ = plain.training_loss(batch)
    assert torch.equal(loss, again) and not torch.equal(loss, first_only)
    task.zero_grad()
    loss.backward()
    grads = [p.grad for p in task.model.mask_decoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    # the mask prompt's path (prompt encoder, frozen) never sees a gradient
    assert all(p.grad is None for p in task.model.prompt_encoder.parameters())


def test_interactive_evaluation_is_deterministic_and_starts_from_the_prompt(
    head_kwargs: dict, fixture_weights: Path, batch: dict
) -> None:
    task = make_task(
        head_kwargs,
        fixture_weights,
        eval_prompts=["box"],
        correction_rounds=1,
        interactive_eval=[0, 1, 3],
        interactive_prompt="box",
    )
    assert task.interactive_names == ["interactive_0", "interactive_1", "interactive_3"]
    results = []
    with torch.no_grad():
        for seed in (0, 0):
            torch.manual_seed(seed + len(results))  # the global generator plays no part
            metric = PromptedIoU(task.val_iou.kinds)
            task.evaluate_batch(batch, metric)
            results.append(metric.compute())
    assert results[0] == results[1]
    result = results[0]
    assert result["interactive_0"] == result["box"]  # zero clicks: the box prompt alone
    assert result["n_interactive_3"] == result["n_box"] > 0
    assert result["interactive_1"] != result["interactive_0"]
    entry = task._entry(result)
    assert entry["mIoU"] == result["box"] and entry["mIoU_interactive_3"] == result["interactive_3"]
    assert make_task(head_kwargs, correction_rounds=2).interactive_names == [
        "interactive_1",
        "interactive_3",
        "interactive_5",
    ]
    assert make_task(head_kwargs).interactive_names == []


def test_bad_round_options_are_refused(head_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="correction_rounds must be an integer >= 0"):
        make_task(head_kwargs, correction_rounds=-1)
    with pytest.raises(ValueError, match="mask_only_rounds must be an integer >= 0"):
        make_task(head_kwargs, correction_rounds=2, mask_only_rounds=1.5)
    with pytest.raises(ValueError, match="needs correction_rounds >= 1"):
        make_task(head_kwargs, mask_only_rounds=2)
    with pytest.raises(ValueError, match="unknown interactive_prompt 'click'"):
        make_task(head_kwargs, interactive_prompt="click")
    with pytest.raises(ValueError, match="click count twice"):
        make_task(head_kwargs, interactive_eval=[1, 1])
    with pytest.raises(ValueError, match="integers >= 0"):
        make_task(head_kwargs, interactive_eval=[-1])
