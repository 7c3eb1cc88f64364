"""BIT change detector against the official model's fixture, key manifests and real LEVIR-CD pairs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from manifests import manifest_state_dict
from rsvit.metrics import ChangeDetectionMetrics, confusion_matrix_scores
from rsvit.models.change import (
    BIT,
    OFFICIAL_PREPROCESSING,
    bit_cross_entropy,
    bit_resnet18_dd8,
    bit_resnet18_dd8_dedim8,
    bit_rsp,
    convert_official_bit_state_dict,
    convert_rsp_cd_state_dict,
)

FIXTURE = "fixtures/bit_base_transformer_pos_s4_dd8"
# Parameters of the official models minus the never-run resnet.layer4.* / resnet.fc.* (SPEC §1).
UNUSED_OFFICIAL_PARAMS = 8_906_728


def decode_fixture_weights(path: Path) -> dict[str, torch.Tensor]:
    """Official state dict from the fixture file: plain tensors plus 4-bit coded large ones."""
    raw = load_file(path)
    assert torch.equal(_decode_q4(raw["selftest/q4"], [raw["selftest/codes"].numel()]), raw["selftest/codes"])
    sd = {}
    for key, value in raw.items():
        if key.startswith("q4/"):
            name = key[3:]
            codes = _decode_q4(value, raw[f"shape/{name}"].tolist())
            sd[name] = codes.float() * raw[f"scale/{name}"]
        elif not key.startswith(("shape/", "scale/", "selftest/")):
            sd[key] = value
    return sd


def _decode_q4(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    b = packed.to(torch.int16)
    nibbles = torch.stack([b & 15, b >> 4], dim=-1).flatten()
    return (nibbles[: int(np.prod(shape))] - 8).to(torch.int8).reshape(shape)


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def preprocess(u8: np.ndarray) -> torch.Tensor:
    """The official BIT pipeline (float32 ``/ 255``, then :data:`OFFICIAL_PREPROCESSING` mean/std)."""
    assert OFFICIAL_PREPROCESSING["scale"] == 1 / 255
    x = torch.from_numpy(np.array(u8)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(OFFICIAL_PREPROCESSING["mean"]).view(3, 1, 1)
    std = torch.tensor(OFFICIAL_PREPROCESSING["std"]).view(3, 1, 1)
    return ((x - mean) / std)[None]


@pytest.fixture(scope="module")
def fixture(reference_dir: Path) -> tuple[BIT, dict[str, torch.Tensor], dict]:
    official = decode_fixture_weights(reference_dir / f"{FIXTURE}_weights.safetensors")
    meta = json.loads(safe_open(reference_dir / f"{FIXTURE}_weights.safetensors", "pt").metadata()["json"])
    # The fixture omits the unused keys; fill them with zeros as a real checkpoint would carry them.
    manifest = manifest_state_dict(reference_dir, "bit_base_transformer_pos_s4_dd8")
    assert set(meta["omitted_unused_keys"]) == set(manifest) - set(official)
    full = {**manifest, **official}
    model = bit_resnet18_dd8().eval()
    model.load_state_dict(convert_official_bit_state_dict(full), strict=True)
    io_path = reference_dir / f"{FIXTURE}_io.safetensors"
    io = load_file(io_path)
    io_meta = json.loads(safe_open(io_path, "pt").metadata()["json"])
    with torch.no_grad():
        logits, inter = model.forward_with_intermediates(io["A"], io["B"])
    return model, {"logits": logits, **inter, **{f"ref/{k}": v for k, v in io.items()}}, io_meta


def test_logits_match_official(fixture):
    _, out, _ = fixture
    torch.testing.assert_close(out["logits"], out["ref/logits"], atol=1e-3, rtol=1e-4)


def test_pred_differs_only_at_near_ties(fixture):
    _, out, _ = fixture
    ref_logits = out["ref/logits"]
    differs = out["logits"].argmax(1) != out["ref/pred"].long()
    margin = (ref_logits[:, 1] - ref_logits[:, 0]).abs()
    assert not (differs & (margin >= 1e-3)).any()
    # The reference pred really is the argmax of the reference logits.
    assert torch.equal(ref_logits.argmax(1), out["ref/pred"].long())


@pytest.mark.parametrize(
    ("ours", "probe"),
    [
        ("features_a", "backbone_out_t1"),
        ("features_b", "backbone_out_t2"),
        ("tokens_a", "tokens_t1"),
        ("tokens_b", "tokens_t2"),
        ("encoder_in", "encoder_in_tokens_with_pos"),
        ("encoder_out", "encoder_out_tokens"),
        ("decoder_out_a", "decoder_out_t1"),
        ("decoder_out_b", "decoder_out_t2"),
        ("absdiff", "absdiff"),
    ],
)
def test_intermediates_match_official_probes(fixture, ours, probe):
    _, out, _ = fixture
    ref = out[f"ref/probe/{probe}"]
    value = out[ours]
    if value.ndim == 4 and ref.ndim == 3:  # the official decoder works on (B, HW, C) sequences
        value = value.flatten(2).transpose(1, 2)
    atol = 1e-4 * max(1.0, ref.abs().max().item())
    torch.testing.assert_close(value, ref, atol=atol, rtol=0)


def test_upsampled_difference_summaries_match(fixture):
    _, out, _ = fixture
    up = F.interpolate(out["absdiff"], scale_factor=4.0, mode="bilinear", align_corners=False).double()
    for name, value in [
        ("absmean", up.abs().mean().reshape(1)),
        ("chmean", up.mean(dim=(0, 2, 3))),
        ("spmean", up.mean(dim=(0, 1))),
    ]:
        ref = out[f"ref/probe/absdiff_up4.{name}"]
        torch.testing.assert_close(value.float(), ref, atol=1e-4 * max(1.0, ref.abs().max().item()), rtol=0)


def test_official_loss_and_scores_of_the_fixture_pair(fixture):
    _, out, meta = fixture
    loss = bit_cross_entropy(out["logits"], out["ref/label"][:, None])
    assert loss.item() == pytest.approx(meta["official_cross_entropy_loss_on_this_pair"], abs=1e-4)
    metric = ChangeDetectionMetrics()
    metric.update(out["logits"], out["ref/label"])
    official = meta["official_metric_tool_on_this_pair"]["scores"]
    ours = confusion_matrix_scores(metric.confmat)
    for key, value in official.items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key


def test_official_cross_entropy_values(reference_dir, fixture):
    """The loss on the official logits reproduces ``bit_metrics_loss.json`` (plain, ignored block,
    low-resolution logits resized with align_corners=True inside the loss)."""
    _, out, _ = fixture
    ref = json.loads((reference_dir / "fixtures/bit_metrics_loss.json").read_text())["cases"]["cross_entropy"]
    logits, label = out["ref/logits"], out["ref/label"][:, None]
    assert bit_cross_entropy(logits, label).item() == pytest.approx(ref["full_res"], rel=1e-6)
    blocked = label.clone()
    blocked[:, :, 100:132, 40:104] = 255
    assert bit_cross_entropy(logits, blocked).item() == pytest.approx(
        ref["with_ignore_block"]["loss"], rel=1e-6
    )
    low = logits[:, :, ::4, ::4]
    assert bit_cross_entropy(low, label).item() == pytest.approx(ref["low_res_logits"]["loss"], rel=1e-6)
    # align_corners=False would give a different value: the test sees the difference.
    wrong = F.cross_entropy(F.interpolate(low, size=(256, 256), mode="bilinear"), label[:, 0].long())
    assert abs(wrong.item() - ref["low_res_logits"]["loss"]) > 1e-4


@pytest.mark.parametrize(
    ("tsv", "builder", "params"),
    [
        ("bit_base_transformer_pos_s4_dd8.tsv", bit_resnet18_dd8, 12_402_506),
        ("bit_base_transformer_pos_s4_dd8_dedim8.tsv", bit_resnet18_dd8_dedim8, 11_943_754),
    ],
)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_manifests_load_strictly(reference_dir, caplog, tsv, builder, params, prefix):
    manifest = manifest_state_dict(reference_dir, tsv)
    model = builder(official_init=False)
    with caplog.at_level(logging.INFO, logger="rsvit.models.change.bit"):
        converted = convert_official_bit_state_dict({prefix + k: v for k, v in manifest.items()})
    assert "dropped 32 unused entries" in caplog.text
    assert len(converted) == len(manifest) - 32
    model.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in model.parameters()) == params - UNUSED_OFFICIAL_PARAMS


def test_rsp_vitaev2_manifest_loads_strictly(reference_dir):
    manifest = manifest_state_dict(reference_dir, "vitaev2_s_bit_cd")
    model = bit_rsp("vitaev2_s")
    converted = convert_rsp_cd_state_dict({"module." + k: v for k, v in manifest.items()})
    model.load_state_dict(converted, strict=True)
    assert model.backbone.channels == [256]
    assert model.feature_proj.in_channels == 256
    assert model.preprocessing["scale"] == 1.0  # raw 0..255 input as in the RSP pipeline


def test_rsp_variant_geometry():
    """Stride-16 map -> x2 -> tokens/decoder at stride 8 -> nearest x2 -> bilinear x4 (align_corners)."""
    model = bit_rsp("resnet50").eval()
    assert model.backbone.channels == [1024] and model.backbone.reductions == [16]
    assert model.align_corners and model.feature_norm is None
    a, b = torch.rand(1, 3, 32, 64) * 255, torch.rand(1, 3, 32, 64) * 255
    with torch.no_grad():
        logits, inter = model.forward_with_intermediates(a, b)
    assert logits.shape == (1, 2, 32, 64)
    assert inter["features_a"].shape == (1, 32, 4, 8)
    diff = inter["absdiff"]
    up = F.interpolate(
        F.interpolate(diff, scale_factor=2.0), scale_factor=4.0, mode="bilinear", align_corners=True
    )
    torch.testing.assert_close(logits, model.classifier(up), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stride-16"):
        bit_rsp("vit_b")


def test_dedim8_variant_shapes():
    model = bit_resnet18_dd8_dedim8().eval()
    assert model.decoder[0].attn.q.weight.shape == (64, 32)
    assert model.decoder[0].attn.proj.weight.shape == (32, 64)
    assert model.encoder[0].attn.qkv.weight.shape == (1536, 32)
    assert len(model.decoder) == 8 and len(model.encoder) == 1
    with torch.no_grad():
        logits, inter = model.forward_with_intermediates(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 2, 32, 32)
    assert inter["features_a"].shape == (2, 32, 8, 8)
    assert inter["encoder_out"].shape == (2, 8, 32)


def test_official_init_reproduces_training_start():
    model = bit_resnet18_dd8()
    assert model.feature_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.classifier.bn.weight.mean().item() == pytest.approx(1.0, abs=0.02)
    assert model.feature_proj.bias.abs().max().item() == 0.0


def test_dates_of_different_sizes_raise(data_dir):
    model = bit_resnet18_dd8().eval()
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 56))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.zeros(3, 64, 64), torch.zeros(3, 64, 64))
    # A real pair whose second date is one row shorter (768x384 vs 768x383).
    root = data_dir / "levir-cd-samples"
    a, b = load_png(root / "A/test_113_0256.png"), load_png(root / "B/test_113_0256.png")
    assert a.shape != b.shape
    with pytest.raises(ValueError, match="same shape"):
        model(preprocess(a), preprocess(b))


def test_odd_sizes_give_input_sized_logits(fixture):
    model = fixture[0]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 36, 20), torch.randn(1, 3, 36, 20))
    assert logits.shape == (1, 2, 36, 20)


@pytest.mark.slow
def test_real_levir_pairs_against_hand_computed_confusion_matrix(fixture, data_dir):
    model, out, _ = fixture
    root = data_dir / "levir-cd-samples"
    names = ["test_7_0256_0512", "test_2_0000_0512"]
    a = torch.cat([preprocess(load_png(root / f"A/{n}.png")) for n in names])
    b = torch.cat([preprocess(load_png(root / f"B/{n}.png")) for n in names])
    labels = [np.asarray(Image.open(root / f"label/{n}.png")) // 255 for n in names]
    # The on-disk pair through the official preprocessing is exactly the fixture's input, so the
    # fixture's logits (already checked) serve for it; the second pair is run here.
    assert np.array_equal(load_png(root / "A/test_7_0256_0512.png"), out["ref/A_u8"].numpy())
    torch.testing.assert_close(a[:1], out["ref/A"], atol=0, rtol=0)
    torch.testing.assert_close(b[:1], out["ref/B"], atol=0, rtol=0)
    with torch.no_grad():
        second = model(a[1:], b[1:])
    logits = torch.cat([out["logits"], second])
    pred = logits.argmax(1).numpy()
    assert 0 < pred[1].sum() < pred[1].size  # the real pair gives a non-trivial prediction

    hand = np.zeros((2, 2), dtype=np.int64)
    for p, g in zip(pred, labels, strict=True):
        for gt_class in (0, 1):
            for pred_class in (0, 1):
                hand[gt_class, pred_class] += int(np.sum((g == gt_class) & (p == pred_class)))
    metric = ChangeDetectionMetrics()
    metric.update(logits, torch.from_numpy(np.stack(labels)))
    assert np.array_equal(metric.confmat.numpy(), hand)
    scores = metric.compute()
    tp, fp, fn = hand[1, 1], hand[0, 1], hand[1, 0]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert scores["precision"].item() == pytest.approx(precision, rel=1e-6)
    assert scores["recall"].item() == pytest.approx(recall, rel=1e-6)
    assert scores["F1"].item() == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-6)
    assert scores["IoU"].item() == pytest.approx(tp / (tp + fp + fn), rel=1e-6)
    assert scores["OA"].item() == pytest.approx(np.trace(hand) / hand.sum(), rel=1e-9)


@pytest.mark.parametrize("backbone", ["resnet50", "vitaev2_s"])
def test_exported_rsp_model_loads_back_equal(backbone, tmp_path):
    """A trained ``bit_rsp`` written with save_model (what a change run exports) must load back whole:
    the exported file is what ``rsvit predict-raster`` and ``--model.weights`` read."""
    from rsvit.models import ModelSpec, build_model, load_model, save_model

    spec = ModelSpec(task="change", backbone=backbone)
    torch.manual_seed(1)
    model = build_model(spec).eval()
    save_model(tmp_path / "model.safetensors", model, spec)
    loaded, loaded_spec, _ = load_model(tmp_path / "model.safetensors")
    assert loaded_spec == spec
    original = model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
