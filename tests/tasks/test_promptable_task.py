"""Fine-tuning the tiny SAM: what trains, adapters, loss going down, report and export for segment-raster."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine

from models.promptable.conftest import tiny_config  # the fixture model's config (tests/ is on the path)
from rsvit.data.promptable import promptable_collate
from rsvit.datamodules.promptable import PromptableDataModule
from rsvit.inference.promptable import load_promptable_model, segment_raster
from rsvit.metrics.promptable import PromptedIoU, mask_iou
from rsvit.models.promptable import SamConfig
from rsvit.tasks.promptable import PromptableReport, PromptableTask
from rsvit.tasks.promptable_losses import sam_loss
from rsvit.tasks.promptable_tuning import LoRALinear, merge_lora
from rsvit.weights import WeightsMismatchError

SIZE = 176  # the fixture model's input


@pytest.fixture(scope="module")
def head_kwargs(reference_dir: Path) -> dict[str, Any]:
    """The fixture model as ``head_kwargs`` of a ``sam_vit_b`` spec (the fields that differ from vit_b)."""
    official = json.loads((reference_dir / "fixtures" / "sam_tiny_config.json").read_text())
    tiny, base = tiny_config(official), SamConfig()
    return {
        f.name: getattr(tiny, f.name)
        for f in dataclasses.fields(SamConfig)
        if getattr(tiny, f.name) != getattr(base, f.name)
    }


@pytest.fixture(scope="module")
def fixture_weights(reference_dir: Path) -> Path:
    return reference_dir / "fixtures" / "sam_tiny.safetensors"


def make_task(head_kwargs: dict[str, Any], weights: Path | None = None, **kwargs: Any) -> PromptableTask:
    spec = {"task": "promptable", "backbone": "sam_vit_b", "head_kwargs": head_kwargs}
    return PromptableTask(spec, weights=str(weights) if weights else None, **kwargs)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``folders`` dataset: 2 training and 2 validation images (120 x 90) with index masks of blobs."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(2):
            labels = np.zeros((90, 120), np.uint8)
            image = rng.integers(60, 100, (90, 120, 3)).astype(np.uint8)
            for k in range(3):
                y, x = rng.integers(5, 60), rng.integers(5, 90)
                labels[y : y + 25, x : x + 25] = 1 + k % 2
                image[y : y + 25, x : x + 25] = (200, 60 + 80 * (k % 2), 40)
            labels[:4] = 255
            Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
            Image.fromarray(labels).save(root / "masks" / split / f"im{i}.png")
    return root


def blob_data(root: Path, **kwargs: Any) -> PromptableDataModule:
    options = {"classes": ["background", "roof", "field"], "skip_classes": ["background"], "img_size": SIZE}
    options.update(min_area=16, max_objects=4, batch_size=2, eval_batch_size=2, num_workers=0, hflip=0.0)
    return PromptableDataModule(str(root), dataset="folders", **{**options, **kwargs})


@pytest.fixture(scope="module")
def batch(folders: Path) -> dict[str, Any]:
    dm = blob_data(folders)
    return promptable_collate([dm.dataset("val")[i] for i in range(2)])


def test_loss_trains_the_best_candidate_and_ignores_unlabelled_pixels() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[0] = False
    good = torch.where(target, 8.0, -8.0)
    logits = torch.stack([-good, good, torch.zeros_like(good)], dim=1)  # candidate 1 is right
    iou_pred = torch.tensor([[0.2, 0.9, 0.5]], requires_grad=True)
    loss, parts = sam_loss(logits, iou_pred, target, valid)
    loss.sum().backward()
    assert iou_pred.grad is not None and iou_pred.grad[0, [0, 2]].abs().sum() == 0
    assert iou_pred.grad[0, 1] == pytest.approx(2 * (0.9 - 1.0))  # the actual IoU of candidate 1 is 1
    assert parts["dice"][0] < 0.01
    changed = logits.clone()
    changed[:, :, 0] = 30.0  # row 0 is unlabelled: nothing there counts
    again, _ = sam_loss(changed, iou_pred.detach(), target, valid)
    torch.testing.assert_close(again, loss.detach())


def test_prompted_iou_per_kind() -> None:
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :2], target[0, :1] = True, True  # IoU 4 / 8
    pred[1, 3], target[1, 3] = True, True  # IoU 1
    valid = torch.ones(4, 4, dtype=torch.bool)
    torch.testing.assert_close(mask_iou(pred, target, valid), torch.tensor([0.5, 1.0]))
    valid[0, :] = False  # without row 0 the first target is empty and the prediction is not
    torch.testing.assert_close(mask_iou(pred, target, valid), torch.tensor([0.0, 1.0]))
    metric = PromptedIoU(["box", "point"])
    metric.update("box", torch.tensor([0.5, 1.0]))
    metric.update("box", torch.tensor([0.0]))
    result = metric.compute()
    assert result["box"] == pytest.approx(0.5) and result["n_box"] == 3
    assert np.isnan(result["point"]) and result["n_point"] == 0


def _trained_names(task: PromptableTask, batch: dict[str, Any]) -> set[str]:
    task.zero_grad()
    loss, _ = task.training_loss(batch)
    loss.backward()
    return {n for n, p in task.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("trainable", ["decoder", "last_blocks", "lora"])
def test_only_the_chosen_parameters_get_gradients(
    trainable: str, head_kwargs: dict, fixture_weights: Path, batch: dict
) -> None:
    task = make_task(head_kwargs, fixture_weights, trainable=trainable, num_blocks=1)
    names = _trained_names(task, batch)
    wanted = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert names <= wanted
    decoder = {n for n in wanted if n.startswith("mask_decoder.")}
    assert decoder and {n for n in names if n.startswith("mask_decoder.")}
    last = f"image_encoder.trunk.blocks.{head_kwargs['encoder_depth'] - 1}."
    if trainable == "decoder":
        assert wanted == decoder
    elif trainable == "last_blocks":
        assert {n.split(".")[2] for n in wanted - decoder} == {"blocks", "neck"}
        assert any(n.startswith(last) for n in names) and not any(".blocks.0." in n for n in wanted)
    else:
        assert wanted - decoder == {n for n in wanted if ".lora_" in n}
        assert any(n.startswith(last) and n.endswith("lora_b") for n in names)
    assert not any(n.startswith("prompt_encoder.") for n in wanted)


def test_lora_starts_as_the_base_model_and_merges_exactly(
    head_kwargs: dict, fixture_weights: Path, batch: dict
) -> None:
    base = make_task(head_kwargs, fixture_weights)
    lora = make_task(head_kwargs, fixture_weights, trainable="lora", lora_rank=2)
    assert sum(isinstance(m, LoRALinear) for m in lora.model.modules()) == head_kwargs["encoder_depth"]
    with torch.no_grad():
        start = base.embed(batch["image"], batch["size"])
        torch.testing.assert_close(lora.embed(batch["image"], batch["size"]), start, rtol=0, atol=0)
        for module in lora.model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_(std=0.05)
        adapted = lora.embed(batch["image"], batch["size"])
        assert (adapted - start).abs().max() > 1e-3
        merged = merge_lora(lora.model)
        assert not any(isinstance(m, LoRALinear) for m in merged.modules())
        x = (batch["image"] - merged.pixel_mean) / merged.pixel_std
        for i, (h, w) in enumerate(batch["size"].tolist()):  # padding is 0 after normalisation
            x[i, :, h:] = 0
            x[i, :, :, w:] = 0
        torch.testing.assert_close(merged.image_encoder(x), adapted, rtol=1e-4, atol=1e-4)


def test_a_few_steps_lower_the_loss(head_kwargs: dict, fixture_weights: Path, batch: dict) -> None:
    torch.manual_seed(0)
    task = make_task(head_kwargs, fixture_weights, train_prompts=["box", "noisy_box"])
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss, _ = task.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_weights_in_both_layouts_and_a_wrong_size(
    head_kwargs: dict, fixture_weights: Path, tmp_path: Path, batch: dict
) -> None:
    official = make_task(head_kwargs, fixture_weights)
    exported = official.export_model(tmp_path / "tiny.safetensors")
    again = make_task(head_kwargs, exported)
    for (name, a), b in zip(
        official.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other = {**head_kwargs, "encoder_embed_dim": 24}
    with pytest.raises(WeightsMismatchError, match="another SAM size"):
        make_task(other, fixture_weights)


def _raster(path: Path) -> Path:
    image = np.full((3, 80, 100), 90, np.uint8)
    image[:, 20:50, 30:70] = np.array([200, 60, 40], np.uint8)[:, None, None]
    profile = {"driver": "GTiff", "width": 100, "height": 80, "count": 3, "dtype": "uint8"}
    transform = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 4500000.0)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform, **profile) as dst:
        dst.write(image)
    return path


def test_fit_reports_before_and_after_and_exports_for_segment_raster(
    head_kwargs: dict, folders: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    task = make_task(head_kwargs, trainable="lora", lora_rank=2, eval_prompts=["box", "point"])
    report = PromptableReport()
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[report],
    )
    trainer.fit(task, datamodule=blob_data(folders))
    result = json.loads((tmp_path / "metrics.json").read_text())
    before, after = result["before"], result["val"]
    assert before["step"] == 0 and after["step"] == 3
    for kind in ("box", "point"):
        assert before[f"prompts_{kind}"] == after[f"prompts_{kind}"] > 0
        assert 0 <= before[f"mIoU_{kind}"] <= 1
        change = result["fine_tuning"][f"mIoU_{kind}"]
        assert change["change"] == pytest.approx(after[f"mIoU_{kind}"] - before[f"mIoU_{kind}"])
    for name in ("box_fill", "whole_image"):  # masks needing no model: the same before and after
        assert 0 < before["reference"][name] == after["reference"][name] <= 1
    assert before["reference"]["box_fill"] > before["reference"]["whole_image"]
    assert (
        result["trainable"]["mode"] == "lora"
        and 0 < result["trainable"]["parameters"] < result["trainable"]["of"]
    )

    model_file = Path(result["model"])
    sam = load_promptable_model(model_file)
    assert not any(isinstance(m, LoRALinear) for m in sam.modules())
    with torch.no_grad():  # the exported model is the fine-tuned one, adapters merged
        images = torch.zeros(1, 3, SIZE, SIZE)
        sizes = torch.tensor([[SIZE, SIZE]])
        torch.testing.assert_close(
            sam.image_encoder((images - sam.pixel_mean) / sam.pixel_std),
            task.embed(images, sizes),
            atol=1e-4,
            rtol=1e-4,
        )
    prompts = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"prompt_id": "roof"},
                "geometry": {"type": "Point", "coordinates": [500000.0 + 2 * 50.5, 4500000.0 - 2 * 35.5]},
            }
        ],
    }
    summary = segment_raster(
        model_file,
        _raster(tmp_path / "scene.tif"),
        prompts,
        tmp_path / "mask.tif",
        prompt_crs="EPSG:32633",
        progress=False,
    )
    assert summary["prompts"] == 1
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.shape == (80, 100) and src.crs.to_epsg() == 32633


def test_bad_settings_are_refused_with_the_fix(head_kwargs: dict, folders: Path) -> None:
    task = make_task(head_kwargs)
    small = promptable_collate([blob_data(folders, img_size=128).dataset("val")[0]])
    with pytest.raises(ValueError, match=f"img_size to {SIZE}"):
        task.training_loss(small)
    with pytest.raises(ValueError, match="unknown prompt kind 'scribble'"):
        make_task(head_kwargs, train_prompts=["scribble"])
    with pytest.raises(ValueError, match="trainable must be one of"):
        make_task(head_kwargs, trainable="encoder")
    with pytest.raises(ValueError, match=r"num_blocks must be in 1\.\.4"):
        make_task(head_kwargs, trainable="last_blocks", num_blocks=9)
