"""Key conversion official -> ours: RSP ResNet-50 and Swin-T to timm, every ViTAEv2 copy to ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.swin_transformer import SwinTransformer
from torch import nn

import rsvit.models  # noqa: F401  (registers vitaev2_* with timm)
from manifests import manifest_rows, zero_views
from rsvit.models.backbones.vitaev2 import ViTAEv2, official_kwargs_to_ours
from rsvit.weights import (
    WeightsError,
    WeightsMismatchError,
    convert_state_dict,
    guess_family,
    infer_family,
    load,
    load_into,
    register_converter,
    split_prefix,
)


def save_manifest_checkpoint(reference_dir: Path, name: str, path: Path, wrapper: str | None = None) -> Path:
    state_dict = zero_views(manifest_rows(reference_dir, name))
    torch.save({wrapper: state_dict, "meta": {}} if wrapper else state_dict, path)
    return path


# ----------------------------------------------------------------------------------------------
# ResNet-50
# ----------------------------------------------------------------------------------------------


def test_rsp_resnet50_matches_timm_names(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "rsp_resnet50_cls51", tmp_path / "r50.pth", "model")
    model = timm.create_model("resnet50", num_classes=51)
    assert infer_family(model) == "resnet"
    result = load(path, model=model, strict=True)
    assert result.ok and result.family == "resnet"
    assert len(result.state_dict) == 320


def test_resnet_classifier_of_another_class_count_is_dropped(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "rsp_resnet50_cls51", tmp_path / "r50.pth")
    model = timm.create_model("resnet50", num_classes=10)
    fc_before = model.fc.weight.detach().clone()
    with pytest.raises(WeightsMismatchError, match=r"missing, e\.g\. \['fc\.weight', 'fc\.bias'\]"):
        load(path, model=model, strict=True)
    result = load_into(model, path)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and not result.unexpected_keys
    torch.testing.assert_close(model.fc.weight, fc_before)  # the new head is kept
    assert model.conv1.weight.abs().sum() == 0  # the backbone was loaded

    features = timm.create_model("resnet50", features_only=True)
    assert load(path, model=features, strict=True).ok


# ----------------------------------------------------------------------------------------------
# Swin
# ----------------------------------------------------------------------------------------------


def _swin_from_fixture_config(config: dict) -> SwinTransformer:
    assert not config["ape"] and config["patch_norm"]
    return SwinTransformer(
        img_size=config["img_size"],
        patch_size=config["patch_size"],
        in_chans=config["in_chans"],
        num_classes=config["num_classes"],
        embed_dim=config["embed_dim"],
        depths=tuple(config["depths"]),
        num_heads=tuple(config["num_heads"]),
        window_size=config["window_size"],
        mlp_ratio=config["mlp_ratio"],
        qkv_bias=config["qkv_bias"],
    ).eval()


@pytest.mark.parametrize("with_model", [True, False], ids=["model", "name-only"])
def test_rsp_swin_fixture_gives_the_official_logits(
    reference_dir: Path, tmp_path: Path, with_model: bool
) -> None:
    fixtures = reference_dir / "fixtures"
    official = load_file(fixtures / "rsp_swin_tiny_cfg.safetensors")
    metadata = load(fixtures / "rsp_swin_tiny_cfg.safetensors").metadata
    model = _swin_from_fixture_config(json.loads(metadata["config"]))
    path = tmp_path / "rsp_swin.pth"
    torch.save({"model": official, "max_accuracy": 1.0}, path)

    if with_model:
        result = load_into(model, path, strict=True)
    else:  # key conversion alone (what `rsvit convert` does), then a plain strict load
        converted = convert_state_dict(official, "swin")
        model.load_state_dict(converted, strict=True)
        result = None
    assert result is None or (result.ok and result.format == "rsp-classification")
    io = load_file(fixtures / "rsp_swin_tiny_cfg_io.safetensors")
    with torch.no_grad():
        logits = model(io["x224"])
    torch.testing.assert_close(logits, io["logits_x224"], rtol=0, atol=1e-6)


def test_rsp_swin_t_layout_loads_into_timm_swin_tiny(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "rsp_swin_t_cls51", tmp_path / "swin_t.pth", "model")
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=51)
    result = load(path, model=model, strict=True)
    assert result.family == "swin" and result.ok
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in result.state_dict)

    headless = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)
    assert load(path, model=headless, strict=True).ok


# ----------------------------------------------------------------------------------------------
# ViTAEv2
# ----------------------------------------------------------------------------------------------


def test_vitaev2_classification_checkpoint(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "vitaev2_s_cls51", tmp_path / "vitae.pth", "model")
    model = timm.create_model("vitaev2_s")
    assert infer_family(model) == "vitaev2"
    result = load(path, model=model, strict=True)
    assert result.ok and result.family == "vitaev2"
    features = timm.create_model("vitaev2_s", features_only=True)
    assert infer_family(features) == "vitaev2"
    assert load(path, model=features, strict=True).ok


def test_vitaev2_segmentation_backbone(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(
        reference_dir, "vitaev2_s_upernet_potsdam", tmp_path / "potsdam.pth", "state_dict"
    )
    features = timm.create_model("vitaev2_s", features_only=True)
    assert load(path, model=features, strict=True, prefix="backbone.").ok
    # The filter also picks the backbone out of a whole segmentor by itself.
    assert load(path, model=timm.create_model("vitaev2_s", num_classes=0), strict=True).ok


def test_vitaev2_change_detection_backbone(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "vitaev2_s_bit_cd", tmp_path / "cd.pth")
    features = timm.create_model("vitaev2_s", features_only=True)
    assert load(path, model=features, strict=True, prefix="backbone.").ok
    backbone = split_prefix(load(path).state_dict, "backbone.")
    assert guess_family(backbone) == "vitaev2"


def test_vitaev2_tiny_fixture_end_to_end(reference_dir: Path, tmp_path: Path) -> None:
    """Official tiny weights wrapped like an RSP file reproduce the official logits after loading."""
    fixtures = reference_dir / "fixtures"
    config = json.loads((fixtures / "vitaev2_tiny_config.json").read_text())
    model = ViTAEv2(**official_kwargs_to_ours(config["constructor_kwargs"])).eval()
    path = tmp_path / "tiny.pth"
    torch.save({"model": load_file(fixtures / "vitaev2_tiny.safetensors"), "max_accuracy": 0.0}, path)
    result = load_into(model, path, strict=True)
    assert result.ok
    io = load_file(fixtures / "vitaev2_tiny_io.safetensors")
    with torch.no_grad():
        logits = model(io["x224"])
    torch.testing.assert_close(logits, io["logits_x224"], rtol=1e-5, atol=2e-5)


def test_wrong_architecture_is_named(reference_dir: Path, tmp_path: Path) -> None:
    path = save_manifest_checkpoint(reference_dir, "rsp_swin_t_cls51", tmp_path / "swin_t.pth", "model")
    with pytest.raises(WeightsMismatchError) as info:
        load(path, model=timm.create_model("resnet50", num_classes=51), strict=True)
    message = str(info.value)
    assert "looks like a 'swin' checkpoint but the model is of family 'resnet'" in message
    assert "missing, e.g. ['conv1.weight'" in message

    small = timm.create_model("swin_tiny_patch4_window7_224", num_classes=51, embed_dim=64)
    with pytest.raises(
        WeightsMismatchError,
        match=r"patch_embed\.proj\.weight: model expects \[64, 3, 4, 4\], file has \[96, 3, 4, 4\]",
    ):
        load(path, model=small, strict=True)


# ----------------------------------------------------------------------------------------------
# Registry and helpers
# ----------------------------------------------------------------------------------------------


def test_registry() -> None:
    with pytest.raises(
        WeightsError, match=r"no weights converter for family 'unknown'.*resnet.*swin.*vitaev2"
    ):
        convert_state_dict({"w": torch.zeros(1)}, "unknown")
    with pytest.raises(ValueError, match="already registered"):
        register_converter("resnet")(lambda sd, model: sd)

    @register_converter("test-upper")
    def upper(state_dict: dict[str, torch.Tensor], model: nn.Module | None) -> dict[str, torch.Tensor]:
        return {k.upper(): v for k, v in state_dict.items()}

    assert list(convert_state_dict({"a.b": torch.zeros(1)}, "test-upper")) == ["A.B"]
    assert list(convert_state_dict({"module.a": torch.zeros(1), "module.b": torch.zeros(1)}, None)) == [
        "a",
        "b",
    ]


def test_split_prefix_and_guess() -> None:
    state_dict = {"backbone.x.w": torch.zeros(1), "decode_head.y": torch.zeros(1)}
    assert list(split_prefix(state_dict, "backbone")) == ["x.w"]
    assert split_prefix(state_dict, "neck.") == {}
    assert guess_family({"layer1.0.conv1.weight": 0, "conv1.weight": 0, "bn1.weight": 0}) is None
    assert guess_family({"module.layers.1.RC.PCM.0.weight": 0}) == "vitaev2"


def test_backbone_part_of_a_whole_model_is_selected() -> None:
    resnet = timm.create_model("resnet18", num_classes=0)
    whole = {f"module.backbone.{k}": v for k, v in resnet.state_dict().items()}
    whole["module.decode_head.conv_seg.weight"] = torch.zeros(2, 8, 1, 1)
    converted = convert_state_dict(whole, "resnet", resnet)
    assert list(converted) == list(resnet.state_dict())


def test_model_converters_are_found_when_only_rsvit_weights_was_imported() -> None:
    """The model packages register their converters; weights finds them without importing model code."""
    code = (
        "import sys, torch; import rsvit.weights as w; "
        "assert 'rsvit.models' not in sys.modules; "
        "sd = {'layers.0.RC.PCM.0.weight': torch.zeros(1), 'layers.0.NC.1.norm1.weight': torch.zeros(1)}; "
        "print(sorted(w.convert_state_dict(sd, 'vitaev2'))); print(','.join(w.available_families()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    keys, families = out.stdout.strip().splitlines()
    assert keys == "['stages.0.blocks.1.norm1.weight', 'stages.0.reduction.pcm.0.weight']"
    assert {"bit", "dpt", "mmseg", "resnet", "rsp_bit_cd", "swin", "vitaev2"} <= set(families.split(","))
