"""Official whole-model checkpoints (mmseg UperNet, BIT, RSP change detection) through rsvit.weights."""

from __future__ import annotations

import pytest
import torch

from manifests import manifest_state_dict
from rsvit.models import create_backbone
from rsvit.models.change.bit import bit_resnet18_dd8_dedim8, bit_rsp
from rsvit.models.segmentor import build_upernet_segmentor
from rsvit.weights import load_into


@pytest.mark.parametrize(("manifest", "classes"), [("vitaev2_s_upernet_potsdam.tsv", 5)])
def test_mmseg_checkpoint_loads_strictly_into_segmentor(reference_dir, tmp_path, manifest, classes):
    sd = manifest_state_dict(reference_dir, manifest, fill="random")
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"CLASSES": ["a"] * classes}, "state_dict": sd}, path)
    model = build_upernet_segmentor(create_backbone("vitaev2_s"), num_classes=classes)
    report = load_into(model, path, strict=True)
    assert report.format == "mmseg" and report.family == "mmseg"
    torch.testing.assert_close(model.decode_head.classifier.weight, sd["decode_head.conv_seg.weight"])
    torch.testing.assert_close(
        model.backbone.model.stages[2].blocks[7].attn.qkv.weight, sd["backbone.layers.2.NC.7.attn.qkv.weight"]
    )


def test_wrong_class_count_is_named(reference_dir, tmp_path):
    sd = manifest_state_dict(reference_dir, "vitaev2_s_upernet_potsdam", fill="random")
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    model = build_upernet_segmentor(create_backbone("vitaev2_s"), num_classes=16)
    with pytest.raises(ValueError, match=r"decode_head\.classifier\.weight: model expects \[16"):
        load_into(model, path, strict=True)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_bit_checkpoint(reference_dir, tmp_path, prefix):
    sd = manifest_state_dict(reference_dir, "bit_base_transformer_pos_s4_dd8_dedim8", fill="random")
    path = tmp_path / "best_ckpt.pt"
    torch.save({"epoch_id": 3, "model_G_state_dict": {prefix + k: v for k, v in sd.items()}}, path)
    model = bit_resnet18_dd8_dedim8()
    report = load_into(model, path, strict=True)
    assert report.format == "bit" and report.ok


def test_rsp_change_detection_state_dict(reference_dir, tmp_path):
    sd = manifest_state_dict(reference_dir, "vitaev2_s_bit_cd", fill="random")
    path = tmp_path / "cd.pth"
    torch.save(sd, path)
    model = bit_rsp("vitaev2_s")
    report = load_into(model, path, strict=True)
    assert report.family == "rsp_bit_cd" and report.ok


def test_dpt_midas_file_loads_through_weights(reference_dir, tmp_path):
    """A MiDaS-layout file (plain state dict) loads strictly into DPT-Hybrid via its weights family."""
    from rsvit.models.dpt import dpt_hybrid

    sd = manifest_state_dict(reference_dir, "dpt_hybrid_midas", fill="random")
    path = tmp_path / "dpt_hybrid-midas.pt"
    torch.save(sd, path)
    model = dpt_hybrid()
    report = load_into(model, path, strict=True)
    assert report.family == "dpt" and report.ok
    torch.testing.assert_close(
        model.backbone.vit.blocks[11].attn.qkv.weight, sd["pretrained.model.blocks.11.attn.qkv.weight"]
    )
