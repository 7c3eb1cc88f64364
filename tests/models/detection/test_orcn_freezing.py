"""Official training settings of the backbone: frozen stages and BatchNorms kept in eval mode."""

from __future__ import annotations

import pytest
import torch
from orcn_fixture import build_tiny_orcn
from torch import nn

from rsvit.models.detection import build_oriented_rcnn


def small(backbone, **kwargs) -> nn.Module:
    return build_oriented_rcnn(backbone, num_classes=2, fpn_channels=8, fc_channels=8, **kwargs)


def batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_resnet_defaults_freeze_stem_and_first_stage_and_batchnorm_statistics() -> None:
    model = small("resnet18").train()
    net = model.backbone.model
    for frozen in (net.conv1, net.bn1, net.layer1):
        assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert all(p.requires_grad for p in model.bbox_head.parameters())
    assert batchnorms(net) and not any(bn.training for bn in batchnorms(net))
    assert model.rpn_head.training and net.layer2.training
    stats = net.layer3[0].bn1.running_mean.clone()
    model.loss(torch.randn(1, 3, 64, 64), [torch.zeros(0, 5)], [torch.zeros(0, dtype=torch.long)])
    assert torch.equal(net.layer3[0].bn1.running_mean, stats)  # statistics untouched by training


def test_freezing_can_be_switched_off() -> None:
    model = small("resnet18", frozen_stages=-1, norm_eval=False).train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(bn.training for bn in batchnorms(model.backbone))
    model = small("resnet18", frozen_stages=2).train()
    assert not any(p.requires_grad for p in model.backbone.model.layer2.parameters())
    assert all(p.requires_grad for p in model.backbone.model.layer3.parameters())


def test_vitaev2_freezes_its_first_stage(reference_dir) -> None:
    fixture, _ = build_tiny_orcn(reference_dir / "fixtures")
    model = small(fixture.backbone).train()
    stages = model.backbone.model.stages
    assert not any(p.requires_grad for p in stages[0].parameters()) and not stages[0].training
    assert all(p.requires_grad for p in stages[1].parameters()) and stages[1].training
    assert not any(bn.training for bn in batchnorms(model.backbone))


def test_unknown_backbone_family_cannot_be_frozen() -> None:
    class Plain(nn.Module):
        channels = (8, 8, 8, 8)

        def forward(self, x):  # pragma: no cover - never run
            return [x] * 4

    assert all(p.requires_grad for p in small(Plain()).parameters())  # default: nothing frozen
    with pytest.raises(ValueError, match="known backbone family"):
        small(Plain(), frozen_stages=1)
