"""The shared backbone contract: NCHW pyramids with declared channels and strides, for every family."""

from __future__ import annotations

import pytest
import torch

from rsvit.models import create_backbone, list_backbones
from rsvit.models.backbones.factory import adapt_input_convs

FAMILIES = ["vitaev2_s", "resnet50", "swin_t", "vit_b", "vit_hybrid"]


@pytest.mark.parametrize("name", FAMILIES)
def test_output_contract_on_odd_sizes(name):
    bb = create_backbone(name).eval()
    assert len(bb.channels) == len(bb.reductions) == len(bb.out_indices)
    x = torch.randn(1, 3, 90, 130)
    with torch.no_grad():
        feats = bb(x)
    assert len(feats) == len(bb.channels)
    for feat, chans, red in zip(feats, bb.channels, bb.reductions, strict=True):
        # Input is padded to a multiple of the deepest stride of the network.
        padded_h = -(-90 // bb.pad_multiple) * bb.pad_multiple
        padded_w = -(-130 // bb.pad_multiple) * bb.pad_multiple
        assert feat.shape == (1, chans, padded_h // red, padded_w // red), (name, feat.shape)
        assert torch.isfinite(feat).all()


def test_hierarchical_backbones_give_the_stride_4_to_32_pyramid():
    for name in ["vitaev2_s", "resnet50", "swin_t"]:
        assert create_backbone(name).reductions == [4, 8, 16, 32]
    assert create_backbone("vit_b").out_indices == [2, 5, 8, 11]


def test_selected_levels_only():
    bb = create_backbone("resnet50", out_indices=(2, 4))
    assert bb.channels == [512, 2048] and bb.reductions == [8, 32]
    feats = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [512, 2048]


@pytest.mark.parametrize("name", ["vitaev2_s", "swin_t", "resnet50"])
def test_more_bands(name):
    bb = create_backbone(name, in_chans=5).eval()
    assert bb.in_chans == 5
    with torch.no_grad():
        assert bb(torch.randn(1, 5, 64, 64))[0].shape[1] == bb.channels[0]
    with pytest.raises(ValueError, match="expects \\(B, 5, H, W\\)"):
        bb(torch.randn(1, 3, 64, 64))


def test_adapting_rgb_stem_weights_to_more_bands():
    rgb = create_backbone("vitaev2_s")
    five = create_backbone("vitaev2_s", in_chans=5)
    sd = rgb.model.state_dict()
    adapted = adapt_input_convs(sd, five.model, 5)
    five.model.load_state_dict(adapted, strict=True)
    for key in ["stages.0.reduction.prm.convs.0.weight", "stages.0.reduction.pcm.0.weight"]:
        w3, w5 = sd[key], adapted[key]
        assert w5.shape[1] == 5
        # RGB kernels repeated over the extra bands, scaled by 3/5 to keep the activation scale.
        torch.testing.assert_close(w5[:, :3], w3 * 3 / 5)
        torch.testing.assert_close(w5[:, 3:], w3[:, :2] * 3 / 5)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet5'.*resnet50"):
        create_backbone("resnet5")
    with pytest.raises(ValueError, match="vitaev2_s"):
        create_backbone("vitae2_s")


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("swin_t", out_indices=(7,))
    with pytest.raises(ValueError, match="in_chans"):
        create_backbone("swin_t", in_chans=0)


def test_listing():
    assert {"vitaev2_s", "resnet50", "swin_t", "vit_b", "vit_hybrid"} <= set(list_backbones())


def test_backbone_argument_errors_are_typed():
    from rsvit.errors import ModelConfigError, RsvitError

    for kwargs in ({"name": "no_such_backbone"}, {"name": "resnet18", "in_chans": 0}):
        with pytest.raises(ModelConfigError) as info:
            create_backbone(**kwargs)
        assert isinstance(info.value, ValueError) and isinstance(info.value, RsvitError)
    with pytest.raises(ModelConfigError, match=r"out_indices \[9\] out of range for 'resnet18'"):
        create_backbone("resnet18", out_indices=(9,))
