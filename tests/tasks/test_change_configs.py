"""The change-detection configs: each parses with the command line, builds its model and keeps the paper
settings (BIT_CD for ResNet-18, the RSP change-detection code for ResNet-50 / Swin-T / ViTAEv2-S)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsvit.cli.lightning import build_cli
from rsvit.tasks.change import ChangeDetectionTask, ChangeReport
from rsvit.tasks.change_predict import ChangePredictionWriter

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "change"
BACKBONES = ("resnet18", "resnet50", "swin_t", "vitaev2_s")
PAPER = [f"{d}_bit_{b}" for d in ("levir", "cdd") for b in BACKBONES]
# Channels of the stride-16 map each RSP backbone gives BIT (SPEC-rsp-tasks.md section 4).
RSP_CHANNELS = {"resnet50": 1024, "swin_t": 384, "vitaev2_s": 256}


def test_every_change_config_is_covered() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted([*PAPER, "levir_quick"])


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_builds_with_the_paper_settings(name: str, data_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(
        [
            "--config",
            str(CONFIGS / f"{name}.yaml"),
            f"--data.root={data_dir / 'levir-cd-samples'}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    task, dm, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(task, ChangeDetectionTask) and task.spec is not None
    backbone = name.split("_bit_")[1]
    assert task.spec.task == "change" and task.num_classes == 2
    assert task.class_names == ["no change", "change"] and task.hparams.eval_mode == "whole"
    assert trainer.max_epochs == 200 and dm.batch_size == 8 and dm.hparams.crop_size == 256
    assert dm.hparams.hflip == 0.5 and dm.hparams.vflip == 0.5 and dm.hparams.rot90
    assert any(isinstance(cb, ChangeReport) and cb.monitor == "F1" for cb in trainer.callbacks)
    assert any(isinstance(cb, ChangePredictionWriter) for cb in trainer.callbacks)

    task.trainer = trainer
    setup = task.configure_optimizers()
    opt = setup["optimizer"]
    assert setup["lr_scheduler"]["interval"] == "epoch"
    setup["lr_scheduler"]["scheduler"].step()  # one epoch of BIT's linear decay: lr0 * (1 - 1/201)
    lr0 = opt.param_groups[0]["initial_lr"]
    assert opt.param_groups[0]["lr"] == pytest.approx(lr0 * 200 / 201)

    x = torch.rand(1, 3, 64, 64)
    if backbone == "resnet18":
        # BIT_CD: the official network and optimiser, inputs (x - 0.5) / 0.5
        assert task.spec.backbone == "bit_resnet18" and task.model.backbone_stride == 8
        assert isinstance(opt, torch.optim.SGD)
        assert (lr0, opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.01, 0.9, 5e-4)
        assert task.mean == [0.5] * 3 and task.std == [0.5] * 3
        assert cli.config["seed_everything"] == 0
    else:
        # RSP: stride-16 map, align_corners True, raw 0-255 inputs, pretrained backbone path to fill in
        assert task.spec.backbone == backbone and task.model.backbone_stride == 16
        assert task.model.align_corners and task.model.feature_proj.in_channels == RSP_CHANNELS[backbone]
        assert (task.model.feature_norm is not None) == (backbone == "swin_t")
        assert "backbone_weights" in task.hparams and task.hparams.backbone_weights is None
        assert cli.config["seed_everything"] == 777
        assert task.mean == [0.0] * 3 and task.std == pytest.approx([1 / 255] * 3)
        scaled = dm.eval_transform({"image_a": x[0], "image_b": x[0]})["image_a"]
        torch.testing.assert_close(scaled, x[0] * 255, rtol=1e-6, atol=1e-4)
        if backbone == "resnet50":
            assert isinstance(opt, torch.optim.SGD)
            assert (lr0, opt.defaults["momentum"], opt.defaults["weight_decay"]) == (1e-3, 0.99, 5e-4)
        else:
            assert isinstance(opt, torch.optim.AdamW)
            assert (lr0, opt.defaults["weight_decay"], opt.defaults["betas"]) == (6e-5, 0.01, (0.9, 0.999))
            assert task.spec.backbone_kwargs["drop_path_rate"] == 0.3
    with torch.no_grad():
        assert task.eval()(x, x).shape == (1, 2, 64, 64)


def test_backbone_weights_are_loaded_into_the_backbone(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    spec = {"backbone": "resnet50", "backbone_kwargs": {}}
    source = ChangeDetectionTask(model=spec).model.backbone
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = ChangeDetectionTask(model=spec, backbone_weights=str(path)).model.backbone
    fresh = ChangeDetectionTask(model=spec).model.backbone
    name = next(k for k, v in source.state_dict().items() if v.is_floating_point() and v.dim() == 4)
    torch.testing.assert_close(loaded.state_dict()[name], source.state_dict()[name])
    assert not torch.equal(fresh.state_dict()[name], source.state_dict()[name])
