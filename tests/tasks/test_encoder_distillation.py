"""SAM encoder distillation on real NAIP windows: loss falls, cache, export through the raster commands."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import lightning as L
import pytest
import rasterio
import torch
from rasterio.windows import Window
from safetensors.torch import load_file

from models.promptable.conftest import tiny_config  # the fixture model's config (tests/ is on the path)
from raster_crops import write_crop
from rsvit.datamodules.unlabelled import UnlabelledDataModule
from rsvit.inference.automatic import masks_raster
from rsvit.inference.promptable import segment_raster
from rsvit.models import ModelSpec, build_model, load_model, save_model
from rsvit.models.promptable import Sam, SamConfig, build_sam, convert_official_sam_state_dict
from rsvit.models.promptable.backbone_encoder import BackboneImageEncoder
from rsvit.tasks.distillation_encoder import (
    EncoderDistillationReport,
    PromptableEncoderDistillationTask,
    sam_input,
)

NAIP = "geotiff/naip/m_4709963_se_14_1_20200831.tif"
# the decoder sizes of the fixture SAM (its img_size is 176, the embedding 32 x 11 x 11)
DECODER = {
    "img_size": 176,
    "prompt_embed_dim": 32,
    "mask_in_chans": 16,
    "decoder_num_heads": 4,
    "decoder_mlp_dim": 64,
    "iou_head_hidden_dim": 32,
}
STUDENT = {"task": "promptable", "backbone": "resnet18", "head_kwargs": DECODER}


def head_kwargs_of(config: SamConfig) -> dict:
    """The SamConfig fields that differ from vit_b's, as plain data for a ModelSpec."""
    default = SamConfig()
    return {
        f.name: list(v) if isinstance(v, tuple) else v
        for f in fields(SamConfig)
        if (v := getattr(config, f.name)) != getattr(default, f.name)
    }


@pytest.fixture(scope="module")
def teacher_file(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reduced official SAM of the reference fixtures as an rsvit model file."""
    config = tiny_config(json.loads((reference_dir / "fixtures" / "sam_tiny_config.json").read_text()))
    model = build_sam(config)
    weights = load_file(reference_dir / "fixtures" / "sam_tiny.safetensors")
    model.load_state_dict(convert_official_sam_state_dict(weights), strict=True)
    spec = ModelSpec(task="promptable", backbone="sam_vit_b", head_kwargs=head_kwargs_of(config))
    path = tmp_path_factory.mktemp("teacher") / "sam_tiny.safetensors"
    save_model(path, model, spec)
    return path


@pytest.fixture(scope="module")
def naip_crop(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 360 x 360 georeferenced RGB crop of the real NAIP tile."""
    path = tmp_path_factory.mktemp("naip") / "crop.tif"
    return write_crop(data_dir / NAIP, path, Window(500, 200, 360, 360), bands=(1, 2, 3))


def real_batch(naip_crop: Path) -> dict:
    data = UnlabelledDataModule(str(naip_crop), input_size=176, train_windows=2, val_windows=2, batch_size=2)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_a_few_steps_lower_the_embedding_error(teacher_file: Path, naip_crop: Path) -> None:
    task = PromptableEncoderDistillationTask(str(teacher_file), model=STUDENT, prompts_per_image=0)
    assert isinstance(task.model.image_encoder, BackboneImageEncoder)
    teacher = task.teacher
    # the student answers prompts with the teacher's decoder, frozen; only the encoder is optimised
    for part in ("prompt_encoder", "mask_decoder"):
        for (name, p), q in zip(
            getattr(task.model, part).named_parameters(), getattr(teacher, part).parameters(), strict=True
        ):
            assert torch.equal(p, q) and not p.requires_grad, name
    optimizer = task.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in task.model.image_encoder.parameters()}

    batch = real_batch(naip_crop)
    task.train()
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = task.training_step(batch, step)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())


def test_fit_caches_reports_and_exports_a_model_the_raster_commands_run(
    teacher_file: Path, naip_crop: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    task = PromptableEncoderDistillationTask(
        str(teacher_file), model=STUDENT, cache_dir=str(cache), prompts_per_image=3
    )
    data = UnlabelledDataModule(str(naip_crop), input_size=176, train_windows=2, val_windows=2, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[EncoderDistillationReport()],
    )
    trainer.fit(task, datamodule=data)

    stored = sorted(cache.rglob("*.safetensors"))
    assert len(stored) == 4  # 2 train + 2 val windows, embedded once over both epochs
    embedding = load_file(stored[0])["logits"]
    assert embedding.dtype == torch.float16 and tuple(embedding.shape) == (32, 11, 11)
    assert task.cache.hits >= 4

    report = json.loads((tmp_path / "metrics.json").read_text())
    val = report["val"]
    assert val["embedding_mse"] > 0 and val["teacher_variance"] > 0
    assert 0 <= val["point_iou"] <= 1 and 0 <= val["mask_iou"] <= 1 and len(report["history"]) == 2

    exported = tmp_path / "model.safetensors"
    model, spec, metadata = load_model(exported)
    assert isinstance(model, Sam) and spec.backbone == "resnet18"
    assert metadata.extra["distilled_from"]["spec"]["backbone"] == "sam_vit_b"
    teacher, _, _ = load_model(teacher_file)
    torch.testing.assert_close(model.mask_decoder.state_dict(), teacher.mask_decoder.state_dict())

    prompts = tmp_path / "prompts.geojson"
    with rasterio.open(naip_crop) as src:
        x0, y0 = src.transform @ (100, 100)
        x1, y1 = src.transform @ (160, 150)
        crs = src.crs.to_string()
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    features = [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [x0, y0]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}},
    ]
    prompts.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    summary = segment_raster(
        exported, naip_crop, prompts, tmp_path / "mask.tif", prompt_crs=crs, progress=False
    )
    assert summary["prompts"] == 2
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert (out.width, out.height) == (360, 360)
    masks = masks_raster(exported, naip_crop, tmp_path / "instances.tif", points_per_side=4, progress=False)
    assert (tmp_path / "instances.tif").is_file() and masks["windows"] >= 1


def test_sam_input_resizes_the_long_side_and_pads() -> None:
    images = torch.ones(2, 3, 50, 100)
    x, size = sam_input(images, 176)
    assert tuple(x.shape) == (2, 3, 176, 176) and size == (88, 176)
    assert torch.all(x[..., :88, :] == 1) and torch.all(x[..., 88:, :] == 0)


def test_bad_teachers_and_students_are_named(teacher_file: Path, reference_dir: Path, tmp_path: Path) -> None:
    classifier = tmp_path / "classifier.safetensors"
    spec = ModelSpec(task="classification", backbone="resnet18", num_classes=2)
    save_model(classifier, build_model(spec), spec)
    with pytest.raises(ValueError, match=r"'classification' model .* needs a promptable"):
        PromptableEncoderDistillationTask(str(classifier), model=STUDENT)
    official_layout = reference_dir / "fixtures" / "sam_tiny.safetensors"  # official keys, no known size
    with pytest.raises(ValueError, match="neither an rsvit promptable model file nor an official SAM"):
        PromptableEncoderDistillationTask(str(official_layout), model=STUDENT)
    with pytest.raises(ValueError, match="needs a promptable model spec"):
        PromptableEncoderDistillationTask(str(teacher_file), model={"task": "classification"})
    small = {**STUDENT, "head_kwargs": {**DECODER, "img_size": 128}}
    with pytest.raises(
        ValueError, match=r"img_size=128 differs .* set model.init_args.model.head_kwargs.img_size: 176"
    ):
        PromptableEncoderDistillationTask(str(teacher_file), model=small)
    task = PromptableEncoderDistillationTask("not/there.safetensors", model=STUDENT)  # loaded when fit starts
    with pytest.raises(FileNotFoundError, match="teacher not found"):
        task.setup("fit")


def test_quick_start_config_runs_through_the_command_line(
    teacher_file: Path, naip_crop: Path, tmp_path: Path
) -> None:
    from rsvit.cli.lightning import train_from_config

    folder = train_from_config(
        Path(__file__).resolve().parents[2]
        / "configs"
        / "distillation"
        / "sam_tiny_to_resnet18_encoder_quick.yaml",
        [
            f"--model.teacher={teacher_file}",
            f"--model.cache_dir={tmp_path / 'cache'}",
            "--model.prompts_per_image=2",
            f"--data.path={naip_crop}",
            "--data.bands=null",
            "--data.train_windows=2",
            "--data.val_windows=1",
            "--data.batch_size=2",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
    )
    model, spec, meta = load_model(folder / "model.safetensors")
    assert isinstance(model, Sam) and spec.head_kwargs["img_size"] == 176
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406])
    report = json.loads((folder / "metrics.json").read_text())
    assert {"embedding_mse", "teacher_variance", "point_iou", "mask_iou"} <= set(report["val"])


def test_backbone_weights_start_the_student_encoder(teacher_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from rsvit.models import create_backbone

    pretrained = create_backbone("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, str(path))
    task = PromptableEncoderDistillationTask(str(teacher_file), model=STUDENT, backbone_weights=str(path))
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(task.model.image_encoder.backbone.state_dict()[key], value, msg=key)
    vit_student = {
        "task": "promptable",
        "backbone": "sam_vit_b",
        "head_kwargs": {**DECODER, "encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 1},
    }
    with pytest.raises(ValueError, match="backbone_weights apply to an encoder built from an rsvit backbone"):
        PromptableEncoderDistillationTask(str(teacher_file), model=vit_student, backbone_weights=str(path))


def test_a_short_fit_follows_the_warm_up_and_cosine_schedule(
    teacher_file: Path, naip_crop: Path, tmp_path: Path
) -> None:
    import math

    task = PromptableEncoderDistillationTask(
        str(teacher_file), model=STUDENT, prompts_per_image=0, scheduler="cosine", warmup_steps=2, min_lr=1e-5
    )
    data = UnlabelledDataModule(str(naip_crop), input_size=176, train_windows=4, val_windows=1, batch_size=1)
    seen: list[float] = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[Recorder()],
    )
    trainer.fit(task, datamodule=data)
    base, floor, total, warmup = 1e-3, 1e-5, 4, 2
    expected = [base * (s + 1) / warmup for s in range(warmup)] + [
        floor + (base - floor) * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) / 2
        for s in range(warmup, total)
    ]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(floor, rel=1e-9)
