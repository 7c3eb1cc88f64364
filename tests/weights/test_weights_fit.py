"""Official classification checkpoints into feature backbones with other band counts."""

from __future__ import annotations

import torch

from manifests import manifest_state_dict
from rsvit.models import create_backbone
from rsvit.weights import WeightsMetadata, load_into, save


def test_rgb_checkpoint_into_five_band_backbone(reference_dir, tmp_path):
    official = manifest_state_dict(reference_dir, "vitaev2_s_cls51", fill="random")
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
    sd = manifest_state_dict(reference_dir, "rsp_resnet50_cls51", fill="random")
    path = save(tmp_path / "r50.safetensors", sd, WeightsMetadata(architecture="resnet50"), family="resnet")
    backbone = create_backbone("resnet50")
    report = load_into(backbone, path, strict=True)
    assert sorted(report.ignored_keys) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.model.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
