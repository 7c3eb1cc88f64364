"""Segmentor (backbone + UperNet + FCN aux) against the official mmsegmentation EncoderDecoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from rsvit.models.backbones import create_backbone
from rsvit.models.backbones.vitaev2 import official_kwargs_to_ours
from rsvit.models.heads import FCNHead, UperNetHead
from rsvit.models.segmentor import (
    Segmentor,
    build_upernet_segmentor,
    convert_mmseg_head_key,
    convert_mmseg_state_dict,
)

ATOL = 5e-5


# -- official fixture -----------------------------------------------------------------------------


def _tiny_official_segmentor(reference_dir: Path) -> tuple[Segmentor, dict, dict[str, torch.Tensor]]:
    fixtures = reference_dir / "fixtures"
    heads_path = fixtures / "rsp_upernet_tiny_segmentor_heads.safetensors"
    with safe_open(str(heads_path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    backbone_kwargs = json.loads((fixtures / "vitaev2_tiny_config.json").read_text())["constructor_kwargs"]
    backbone = create_backbone("vitaev2_s", **official_kwargs_to_ours(backbone_kwargs))
    dec, aux = config["decode_head"], config["auxiliary_head"]
    assert backbone.channels == dec["in_channels"]
    model = Segmentor(
        backbone,
        UperNetHead(
            dec["in_channels"],
            dec["num_classes"],
            channels=dec["channels"],
            pool_scales=dec["pool_scales"],
            dropout=dec["dropout_ratio"],
            align_corners=dec["align_corners"],
        ),
        FCNHead(
            aux["in_channels"],
            aux["channels"],
            aux["num_classes"],
            in_index=aux["in_index"],
            num_convs=aux["num_convs"],
            concat_input=aux["concat_input"],
            dropout=aux["dropout_ratio"],
        ),
    )
    # The official EncoderDecoder state: backbone weights under "backbone." plus the head weights.
    official = {f"backbone.{k}": v for k, v in load_file(fixtures / "vitaev2_tiny.safetensors").items()}
    official.update(load_file(heads_path))
    model.load_state_dict(convert_mmseg_state_dict(official, model=model), strict=True)
    return model.eval(), config, load_file(fixtures / "rsp_upernet_tiny_segmentor_io.safetensors")


@pytest.fixture(scope="module")
def tiny_segmentor(reference_dir: Path) -> tuple[Segmentor, dict, dict[str, torch.Tensor]]:
    return _tiny_official_segmentor(reference_dir)


def test_whole_image_logits_match_official(tiny_segmentor) -> None:
    model, _, io = tiny_segmentor
    with torch.no_grad():
        logits = model(io["img"][..., :128, :128])
    assert logits.shape == io["crop0_logits"].shape
    torch.testing.assert_close(logits, io["crop0_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_slide_logits_match_official(tiny_segmentor, batch_size: int) -> None:
    model, config, io = tiny_segmentor
    test_cfg = config["test_cfg"]
    assert test_cfg["mode"] == "slide"
    with torch.no_grad():
        logits = model.slide_inference(
            io["img"], test_cfg["crop_size"], test_cfg["stride"], batch_size=batch_size
        )
    assert logits.shape == io["slide_logits"].shape
    torch.testing.assert_close(logits, io["slide_logits"], atol=ATOL, rtol=0)
    # The windows overlap and disagree: whole-image inference is a different answer.
    with torch.no_grad():
        whole = model(io["img"])
    assert (whole - io["slide_logits"]).abs().max() > 100 * ATOL


def test_aux_head_runs_on_shared_features(tiny_segmentor) -> None:
    model, _, io = tiny_segmentor
    with torch.no_grad():
        main, aux = model.forward_with_aux(io["img"][..., :128, :128])
    torch.testing.assert_close(main, io["crop0_logits"], atol=ATOL, rtol=0)
    assert aux is not None and aux.shape == main.shape
    assert not torch.allclose(aux, main)


# -- official key layouts -------------------------------------------------------------------------


def _zero_state_dict(tsv: Path) -> dict[str, torch.Tensor]:
    dtypes = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
    out = {}
    for i, line in enumerate(tsv.read_text().splitlines()):
        key, shape, dtype = line.split("\t")
        # Distinct constant per entry, so the test can check where each one ends up.
        out[key] = torch.full(json.loads(shape), i, dtype=dtypes[dtype])
    return out


@pytest.mark.parametrize(("dataset", "num_classes"), [("potsdam", 5), ("isaid", 16)])
def test_official_checkpoint_layout_loads_strictly(
    reference_dir: Path, dataset: str, num_classes: int
) -> None:
    official = _zero_state_dict(reference_dir / "keys" / f"vitaev2_s_upernet_{dataset}.tsv")
    assert len(official) == 626
    model = build_upernet_segmentor(create_backbone("vitaev2_s"), num_classes)
    converted = convert_mmseg_state_dict(official, model=model)
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    # Without the model the default layout (a backbone from create_backbone) gives the same keys.
    assert convert_mmseg_state_dict(official).keys() == converted.keys()
    ours = model.state_dict()
    for official_key, our_key in [
        ("decode_head.conv_seg.weight", "decode_head.classifier.weight"),
        ("decode_head.psp_modules.3.1.bn.running_var", "decode_head.ppm.branches.3.bn.running_var"),
        ("decode_head.bottleneck.conv.weight", "decode_head.ppm.fuse.conv.weight"),
        ("decode_head.lateral_convs.2.conv.weight", "decode_head.lateral_convs.2.conv.weight"),
        ("decode_head.fpn_convs.0.bn.weight", "decode_head.fpn_convs.0.bn.weight"),
        ("decode_head.fpn_bottleneck.conv.weight", "decode_head.fuse.conv.weight"),
        ("auxiliary_head.convs.0.conv.weight", "auxiliary_head.convs.0.conv.weight"),
        ("auxiliary_head.conv_seg.bias", "auxiliary_head.classifier.bias"),
    ]:
        torch.testing.assert_close(ours[our_key], official[official_key], atol=0, rtol=0)
    assert ours["decode_head.classifier.weight"].shape == (num_classes, 512, 1, 1)
    # The unused dense norms and relative-position tables are dropped, not loaded somewhere.
    assert not any(".norm0." in k or "relative_position" in k for k in converted)


def test_head_key_conversion() -> None:
    assert (
        convert_mmseg_head_key("decode_head.psp_modules.2.1.conv.weight")
        == "decode_head.ppm.branches.2.conv.weight"
    )
    assert convert_mmseg_head_key("auxiliary_head.conv_cat.bn.bias") == "auxiliary_head.concat_conv.bn.bias"
    assert (
        convert_mmseg_head_key("decode_head.lateral_convs.0.conv.weight")
        == "decode_head.lateral_convs.0.conv.weight"
    )
    converted = convert_mmseg_state_dict({"module.decode_head.conv_seg.bias": torch.zeros(2)})
    assert list(converted) == ["decode_head.classifier.bias"]


def test_concat_input_fcn_converts() -> None:
    fcn = FCNHead(8, 4, 3, in_index=0, num_convs=2, concat_input=True)
    official = {}
    for key, value in fcn.state_dict().items():
        key = key.replace("classifier.", "conv_seg.").replace("concat_conv.", "conv_cat.")
        official[f"auxiliary_head.{key}"] = value
    converted = convert_mmseg_state_dict(official)
    fcn.load_state_dict({k.removeprefix("auxiliary_head."): v for k, v in converted.items()}, strict=True)


# -- API and errors (toy backbone) ----------------------------------------------------------------


class _ToyBackbone(nn.Module):
    """Two maps at strides 4 and 8, like the contract of ``rsvit.models.backbones``."""

    def __init__(self) -> None:
        super().__init__()
        self.channels = [8, 16]
        self.reductions = [4, 8]
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.down = nn.Conv2d(8, 16, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stem(x)
        return [a, self.down(a)]


def _toy_segmentor(aux: bool = True) -> Segmentor:
    return build_upernet_segmentor(
        _ToyBackbone(), num_classes=3, channels=8, aux_channels=8 if aux else None, aux_index=1
    ).eval()


def test_shapes_and_training_outputs() -> None:
    model = _toy_segmentor()
    x = torch.randn(2, 3, 70, 90)  # not a multiple of the stride: logits are still resized to the input
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3, 70, 90)
    model.train()
    main, aux = model.forward_with_aux(x)
    assert main.shape == aux.shape == (2, 3, 70, 90)
    (main.mean() + 0.4 * aux.mean()).backward()
    assert model.auxiliary_head.classifier.weight.grad is not None
    assert model.backbone.stem.weight.grad is not None
    assert _toy_segmentor(aux=False).forward_with_aux(x)[1] is None
    assert model.num_classes == 3


def test_slide_inference_api() -> None:
    model = _toy_segmentor()
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        slide = model.slide_inference(x, (64, 64), (48, 48))
        small = model.slide_inference(x, 128, 96)  # the whole image fits into one window
        whole = model(x)
    assert slide.shape == (1, 3, 72, 100)
    torch.testing.assert_close(small, whole, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="uncovered"):
        model.slide_inference(x, 32, 48)


def test_bad_wiring_fails_clearly() -> None:
    with pytest.raises(TypeError, match="num_classes"):
        Segmentor(_ToyBackbone(), nn.Conv2d(16, 3, 1))
    with pytest.raises(ValueError, match="auxiliary head predicts 4 classes"):
        Segmentor(_ToyBackbone(), UperNetHead([8, 16], 3, 8), FCNHead(16, 8, 4, in_index=1))
    wrong_channels = Segmentor(_ToyBackbone(), UperNetHead([8, 32], 3, 8)).eval()
    with pytest.raises(ValueError, match="feature map 1 has 16 channels"):
        wrong_channels(torch.randn(1, 3, 32, 32))
    too_many_maps = Segmentor(_ToyBackbone(), UperNetHead([8, 16, 32], 3, 8)).eval()
    with pytest.raises(ValueError, match="received only 2"):
        too_many_maps(torch.randn(1, 3, 32, 32))
    model = _toy_segmentor()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    single_map = Segmentor(nn.Conv2d(3, 8, 4, stride=4), UperNetHead([8], 3, 8)).eval()
    with pytest.raises(TypeError, match="list of NCHW maps"):
        single_map(torch.randn(1, 3, 32, 32))
