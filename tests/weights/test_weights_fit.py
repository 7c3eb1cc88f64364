"""Official classification checkpoints into feature backbones with other band counts."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rsvit.models import create_backbone
from rsvit.weights import WeightsMetadata, load_into, save

DTYPES = {"float32": torch.float32, "int64": torch.int64}


def random_state_dict(tsv: Path) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for line in tsv.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        shape = json.loads(shape)
        sd[key] = (
            torch.randn(shape, generator=gen) if dtype == "float32" else torch.zeros(shape, dtype=torch.int64)
        )
    return sd


def test_rgb_checkpoint_into_five_band_backbone(reference_dir, tmp_path):
    official = random_state_dict(reference_dir / "keys/vitaev2_s_cls51.tsv")
    path = tmp_path / "rsp.pth"
    torch.save({"model": official, "epoch": 1}, path)
    backbone = create_backbone("vitaev2_s", in_chans=5)
    report = load_into(backbone, path, strict=True)
    assert len(report.adapted_keys) == 5 and report.ok
    assert not any("head" in key for key in report.state_dict)
    stem = backbone.model.stages[0].reduction.prm.convs[2].weight
    rgb = official["layers.0.RC.PRM.convs.2.0.weight"]
    torch.testing.assert_close(stem[:, :3], rgb * 3 / 5)
    torch.testing.assert_close(stem[:, 3:], rgb[:, :2] * 3 / 5)
    with torch.no_grad():
        assert backbone(torch.randn(1, 5, 64, 64))[-1].shape == (1, 512, 2, 2)


def test_exported_classifier_weights_load_strictly_into_backbone(reference_dir, tmp_path):
    sd = random_state_dict(reference_dir / "keys/rsp_resnet50_cls51.tsv")
    path = save(tmp_path / "r50.safetensors", sd, WeightsMetadata(architecture="resnet50"), family="resnet")
    backbone = create_backbone("resnet50")
    report = load_into(backbone, path, strict=True)
    assert sorted(report.ignored_keys) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.model.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
