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


# ------------------------------------------------------------------------------------------------
# DPT: official RGB checkpoints into models with other band counts
# ------------------------------------------------------------------------------------------------


def test_official_dpt_hybrid_checkpoint_loads_into_four_bands(reference_dir, tmp_path):
    from rsvit.models.dpt import dpt_hybrid

    official = manifest_state_dict(reference_dir, "dpt_hybrid_midas", fill="view")
    path = tmp_path / "dpt_hybrid-midas.pt"
    torch.save(official, path)
    model = dpt_hybrid(in_chans=4)
    report = load_into(model, path, strict=True)
    stem = "backbone.vit.patch_embed.backbone.stem.conv.weight"
    assert report.ok and report.family == "dpt" and report.adapted_keys == [stem]
    assert model.backbone.vit.patch_embed.backbone.stem.conv.weight.shape == (64, 4, 7, 7)


def test_vit_patch_embed_adaptation_follows_timm_rule():
    """Plain patch embedding (DPT-Large/Base): 4/3 * [R/2, G, B, R/2] gives exactly the RGB output."""
    from rsvit.models.dpt import DPT, DPTHead, DPTViTBackbone
    from rsvit.weights.fit import fit_to_model

    def small(in_chans):
        torch.manual_seed(0)
        cfg = dict(embed_dim=64, depth=4, num_heads=4, taps=(0, 1, 2, 3), widths=(16, 32, 64, 64))
        backbone = DPTViTBackbone(in_chans=in_chans, img_size=64, **cfg)
        return DPT(backbone, DPTHead(backbone.channels, features=16, non_negative=False)).eval()

    rgb_model, model = small(3), small(4)
    fitted, adapted, _ = fit_to_model(rgb_model.state_dict(), model)
    assert adapted == ["backbone.vit.patch_embed.proj.weight"]
    model.load_state_dict(fitted)
    weight = fitted["backbone.vit.patch_embed.proj.weight"]
    rgb_weight = rgb_model.state_dict()["backbone.vit.patch_embed.proj.weight"]
    torch.testing.assert_close(weight[:, 3], rgb_weight[:, 0] * 3 / 4)
    rgb = torch.randn(2, 3, 64, 64)
    four = 4 / 3 * torch.cat([rgb[:, :1] / 2, rgb[:, 1:], rgb[:, :1] / 2], 1)
    with torch.no_grad():
        expected = rgb_model(rgb)
        spread = float(expected.max() - expected.min())
        torch.testing.assert_close(model(four), expected, atol=1e-5 * spread, rtol=1e-5)
        # The control: plainly repeating R as the fourth band is not what the rule preserves.
        control = model(torch.cat([rgb, rgb[:, :1]], 1))
        assert float((control - expected).abs().max()) > 3e-3 * spread  # 300x the tolerance above


def test_standardized_adaptation_rule_on_timm_stdconv():
    """Zero mean and equal norm per filter: the layer's standardisation rescales every filter alike."""
    from timm.layers import StdConv2d

    from rsvit.weights.fit import adapt_standardized_conv, is_weight_standardized

    assert is_weight_standardized(StdConv2d(3, 8, 3)) and not is_weight_standardized(torch.nn.Conv2d(3, 8, 3))
    w = torch.randn(8, 3, 3, 3) * 0.02 + 0.01
    for bands in (4, 5, 7):
        out = adapt_standardized_conv(bands, w)
        assert out.shape == (8, bands, 3, 3)
        torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-6, rtol=0)
        norms = out.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, norms[:1].expand(8), atol=1e-5, rtol=1e-5)
        repeats = bands // 3
        assert float(out[:, 3 * repeats :].abs().sum()) == 0.0


def test_wrapper_head_named_like_the_backbone_classifier_survives(tmp_path):
    """A change model whose feature backbone's timm classifier is called ``classifier`` has its own
    ``classifier``: loading its exported weights must keep that head, not drop it as the backbone's."""

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = create_backbone("test_efficientnet", out_indices=(1, 2))
            self.classifier = torch.nn.Conv2d(4, 2, 1)

    torch.manual_seed(0)
    source, target = Wrapper(), Wrapper()
    assert source.backbone.model.pretrained_cfg["classifier"] == "classifier"
    path = tmp_path / "wrapper.safetensors"
    save(path, source.state_dict(), WeightsMetadata())
    load_into(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
