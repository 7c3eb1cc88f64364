"""UperNet and FCN heads against the official mmsegmentation heads (fixture ``rsp_upernet_head``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rsvit.models.heads import FCNHead, UperNetHead
from rsvit.models.segmentor import convert_mmseg_state_dict

ATOL = 5e-5


def _split(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def head_fixture(reference_dir: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    path = reference_dir / "fixtures" / "rsp_upernet_head.safetensors"
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    weights = convert_mmseg_state_dict(load_file(path))
    io = load_file(reference_dir / "fixtures" / "rsp_upernet_head_io.safetensors")
    return config, weights, io


def _build_heads(config: dict) -> tuple[UperNetHead, FCNHead]:
    dec, aux = config["decode_head"], config["auxiliary_head"]
    assert dec["type"] == "UPerHead" and aux["type"] == "FCNHead"
    assert dec["in_index"] == list(range(len(dec["in_channels"])))
    upernet = UperNetHead(
        dec["in_channels"],
        dec["num_classes"],
        channels=dec["channels"],
        pool_scales=dec["pool_scales"],
        dropout=dec["dropout_ratio"],
        align_corners=dec["align_corners"],
    )
    fcn = FCNHead(
        aux["in_channels"],
        aux["channels"],
        aux["num_classes"],
        in_index=aux["in_index"],
        num_convs=aux["num_convs"],
        concat_input=aux["concat_input"],
        dropout=aux["dropout_ratio"],
    )
    return upernet, fcn


def test_heads_match_official(head_fixture) -> None:
    config, weights, io = head_fixture
    upernet, fcn = _build_heads(config)
    upernet.load_state_dict(_split(weights, "decode_head."), strict=True)
    fcn.load_state_dict(_split(weights, "auxiliary_head."), strict=True)
    upernet.eval()
    fcn.eval()
    feats = [io[f"in{i}"] for i in range(4)]
    with torch.no_grad():
        decode = upernet(feats)
        aux = fcn(feats)
    assert decode.shape == io["decode_logits"].shape
    assert aux.shape == io["aux_logits"].shape
    torch.testing.assert_close(decode, io["decode_logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(aux, io["aux_logits"], atol=ATOL, rtol=0)


def test_fixture_is_sensitive_to_align_corners(head_fixture) -> None:
    """The comparison above can fail: a resize with the wrong corner convention moves the logits."""
    config, weights, io = head_fixture
    config = json.loads(json.dumps(config))
    config["decode_head"]["align_corners"] = True
    upernet, _ = _build_heads(config)
    upernet.load_state_dict(_split(weights, "decode_head."), strict=True)
    upernet.eval()
    with torch.no_grad():
        decode = upernet([io[f"in{i}"] for i in range(4)])
    assert (decode - io["decode_logits"]).abs().max() > 100 * ATOL


def test_dropout_only_in_training() -> None:
    head = UperNetHead([8, 16], num_classes=3, channels=8, dropout=0.5)
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)]
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(feats), head(feats))
    assert isinstance(head.dropout, torch.nn.Dropout2d)
    assert isinstance(UperNetHead([8], 3, 8, dropout=0.0).dropout, torch.nn.Identity)


def test_output_resolution_and_in_index() -> None:
    # A five-map backbone of which the head reads maps 1..4; output follows the finest map read.
    channels = [4, 8, 16, 32, 64]
    feats = [torch.randn(1, c, 64 // 2**i, 48 // 2**i) for i, c in enumerate(channels)]
    head = UperNetHead(channels[1:], num_classes=7, channels=16, in_index=[1, 2, 3, 4]).eval()
    assert head(feats).shape == (1, 7, 32, 24)
    fcn = FCNHead(16, 8, 7, in_index=2).eval()
    assert fcn(feats).shape == (1, 7, 16, 12)


def test_conv_units_have_no_bias_and_batchnorm() -> None:
    head = UperNetHead([8, 16], num_classes=3, channels=8)
    convs = [m for name, m in head.named_modules() if isinstance(m, torch.nn.Conv2d) and name != "classifier"]
    assert convs and all(c.bias is None for c in convs)
    assert head.classifier.bias is not None
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in head.modules()) == len(convs)


def test_fcn_variants() -> None:
    x = [torch.randn(1, 8, 10, 10)]
    assert FCNHead(8, 8, 3, in_index=0, num_convs=0).eval()(x).shape == (1, 3, 10, 10)
    concat = FCNHead(8, 4, 3, in_index=0, num_convs=2, concat_input=True).eval()
    assert concat.concat_conv is not None and concat(x).shape == (1, 3, 10, 10)
    assert len(concat.convs) == 2
    with pytest.raises(ValueError, match="must equal channels"):
        FCNHead(8, 4, 3, num_convs=0)


def test_bad_inputs_fail_clearly() -> None:
    head = UperNetHead([8, 16, 32], num_classes=3, channels=8).eval()
    feats = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([8, 16, 32])]
    with pytest.raises(ValueError, match="received only 2"):
        head(feats[:2])
    with pytest.raises(ValueError, match="feature map 1 has 17 channels"):
        head([feats[0], torch.randn(1, 17, 8, 8), feats[2]])
    with pytest.raises(ValueError, match="must be NCHW"):
        head([feats[0], feats[1], feats[2][0]])
    with pytest.raises(TypeError, match="list of NCHW"):
        head(feats[0])
    with pytest.raises(ValueError, match="same length"):
        UperNetHead([8, 16], num_classes=3, in_index=[0, 1, 2])
    with pytest.raises(ValueError, match="pool_scales"):
        UperNetHead([8, 16], num_classes=3, pool_scales=(0, 2))
    with pytest.raises(ValueError, match="received only 1"):
        FCNHead(8, 8, 3, in_index=2)([feats[0]])
