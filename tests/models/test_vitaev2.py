"""ViTAEv2 against the official model's numeric fixtures and checkpoint key layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import rsvit.models  # noqa: F401  (registers vitaev2 with timm)
from manifests import manifest_state_dict
from rsvit.models.backbones.vitaev2 import (
    SHORT_SEQUENCE_CPU,
    ViTAEv2,
    _official_drop_path_rates,
    attend,
    checkpoint_filter_fn,
    official_kwargs_to_ours,
)


@pytest.fixture(scope="module")
def tiny(reference_dir: Path) -> tuple[ViTAEv2, dict[str, torch.Tensor]]:
    cfg = json.loads((reference_dir / "fixtures/vitaev2_tiny_config.json").read_text())
    model = ViTAEv2(**official_kwargs_to_ours(cfg["constructor_kwargs"])).eval()
    official = load_file(reference_dir / "fixtures/vitaev2_tiny.safetensors")
    model.load_state_dict(checkpoint_filter_fn(official, model), strict=True)
    io = load_file(reference_dir / "fixtures/vitaev2_tiny_io.safetensors")
    return model, io


@pytest.mark.parametrize("record_grad", [False, True])
def test_tiny_logits_match_official(tiny, record_grad):
    """Both the inference kernels and the differentiable ones reproduce the official logits."""
    model, io = tiny
    with torch.set_grad_enabled(record_grad):
        logits = model(io["x224"])
    assert (logits.grad_fn is not None) == record_grad
    torch.testing.assert_close(logits.detach(), io["logits_x224"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["x224", "x256", "x256x320"])
def test_tiny_stage_features_match_official(tiny, name):
    model, io = tiny
    with torch.no_grad():
        feats = model.forward_intermediates(io[name], intermediates_only=True)
    assert len(feats) == 4
    for i, feat in enumerate(feats):
        torch.testing.assert_close(feat, io[f"feat{i}_{name}"], atol=1e-4, rtol=1e-5)


def test_tiny_through_features_only_wrapper(tiny, reference_dir):
    """timm's features_only path returns the same NCHW maps as the direct call."""
    _, io = tiny
    cfg = json.loads((reference_dir / "fixtures/vitaev2_tiny_config.json").read_text())
    kwargs = official_kwargs_to_ours(cfg["constructor_kwargs"])
    kwargs.pop("num_classes")
    feat_model = timm.create_model("vitaev2_s", features_only=True, **kwargs).eval()
    official = load_file(reference_dir / "fixtures/vitaev2_tiny.safetensors")
    feat_model.model.load_state_dict(checkpoint_filter_fn(official, feat_model.model), strict=True)
    with torch.no_grad():
        feats = feat_model(io["x256x320"])
    assert feat_model.feature_info.reduction() == [4, 8, 16, 32]
    for i, feat in enumerate(feats):
        torch.testing.assert_close(feat, io[f"feat{i}_x256x320"], atol=1e-4, rtol=1e-5)


def test_parameter_count_matches_spec():
    # SPEC: 18,870,203 parameters with the 51-class head, of which 1,352 are unused relative-position
    # tables that we do not create.
    model = timm.create_model("vitaev2_s")
    assert sum(p.numel() for p in model.parameters()) == 18_870_203 - 1_352


def test_classification_checkpoint_layout_loads_strictly(reference_dir):
    model = timm.create_model("vitaev2_s", num_classes=51)
    sd = manifest_state_dict(reference_dir, "vitaev2_s_cls51")
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    assert torch.count_nonzero(model.head.weight) == 0


@pytest.mark.parametrize("manifest", ["vitaev2_s_upernet_potsdam.tsv", "vitaev2_s_bit_cd.tsv"])
def test_dense_checkpoint_layouts_load_strictly(reference_dir, manifest):
    sd = manifest_state_dict(reference_dir, manifest)
    assert any(k.startswith("backbone.norm0") for k in sd)  # unused dense norms must be accepted
    model = timm.create_model("vitaev2_s", num_classes=0)
    converted = checkpoint_filter_fn(sd, model)
    model.load_state_dict(converted, strict=True)
    assert not any(k.startswith(("decode_head", "classifier", "norm0")) for k in converted)


def test_filter_rejects_nothing_silently_for_wrong_architecture(reference_dir):
    """A checkpoint of another architecture must not load strictly."""
    model = timm.create_model("vitaev2_s", num_classes=51)
    sd = manifest_state_dict(reference_dir, "rsp_resnet50_cls51")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)


def test_any_input_size_equals_padded_input():
    model = timm.create_model("vitaev2_s", num_classes=0).eval()
    x = torch.randn(1, 3, 70, 100)
    padded = torch.nn.functional.pad(x, (0, 28, 0, 26))
    with torch.no_grad():
        a = model.forward_intermediates(x, intermediates_only=True)
        b = model.forward_intermediates(padded, intermediates_only=True)
    assert [tuple(f.shape[2:]) for f in a] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    for fa, fb in zip(a, b, strict=True):
        torch.testing.assert_close(fa, fb)


def test_wrong_band_count_is_a_clear_error():
    model = timm.create_model("vitaev2_s", num_classes=0)
    with pytest.raises(ValueError, match="built for 3 input bands but got 4"):
        model(torch.zeros(1, 4, 64, 64))


def test_multiband_model_runs():
    model = timm.create_model("vitaev2_s", num_classes=7, in_chans=6).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 6, 64, 64)).shape == (2, 7)


def test_official_drop_path_schedule_reproduces_slicing_quirk():
    rates = _official_drop_path_rates((2, 2, 8, 2), 0.3)
    dpr = torch.linspace(0, 0.3, 14).tolist()
    for got, want in zip(rates, [dpr[0:2], dpr[2:4], dpr[2:10], dpr[8:10]], strict=True):
        assert got == pytest.approx(want, abs=1e-7)
    assert max(max(r) for r in rates) == pytest.approx(0.2077, abs=1e-4)


def test_official_kwargs_refuse_what_we_do_not_reproduce():
    with pytest.raises(ValueError, match="relative position"):
        official_kwargs_to_ours({"relative_pos": True})
    with pytest.raises(ValueError, match="unknown official"):
        official_kwargs_to_ours({"shift_size": 3})


def test_training_step_and_gradient_checkpointing_agree():
    torch.manual_seed(0)
    model = timm.create_model("vitaev2_s", num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)

    def grads():
        model.zero_grad()
        torch.manual_seed(1)
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing(True)
    ckpt = grads()
    assert plain.keys() == ckpt.keys() and len(plain) > 100
    for name in plain:
        torch.testing.assert_close(plain[name], ckpt[name], atol=1e-5, rtol=1e-4)


def test_channels_last_and_bf16_autocast(tiny):
    model, io = tiny
    x = io["x224"]
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(cl, ref, atol=2e-5, rtol=0)
    assert low.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits: the ranking of classes barely moves.
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [49, SHORT_SEQUENCE_CPU + 40])
def test_attention_paths_agree_with_the_fused_kernel_in_value_and_gradient(tokens, dtype):
    """Short bfloat16 sequences on CPU take the explicit product, the rest the fused kernel: both must be
    the same attention, forward and backward (compared in float64)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, tokens, 16, dtype=dtype, requires_grad=True) for _ in range(3))
    out = attend(q, k, v)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q64, k64, v64))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, atol=10 * tol, rtol=10 * tol)


def test_parallel_conv_folds_batchnorm_at_inference_only():
    """Eval: BatchNorm folded into the convolutions gives the plain layers' output; training: the plain
    layers themselves (batch statistics, running averages updated)."""
    from rsvit.models.backbones.vitaev2 import _pcm

    torch.manual_seed(0)
    pcm = _pcm((8, 16, 16, 8), (2, 1, 1), groups=2)
    for bn in (pcm[1], pcm[4]):  # non-trivial frozen statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 20, 20)
    pcm.eval()
    with torch.no_grad():
        folded = pcm(x)
        plain = torch.nn.Sequential.forward(pcm, x)
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)
    pcm.train()
    before = pcm[1].running_mean.clone()
    out = pcm(x)
    assert not torch.allclose(pcm[1].running_mean, before)  # batch statistics were used and tracked
    assert not torch.allclose(out, folded, atol=1e-3)


def test_exports_with_portable_ops_and_official_numerics(tiny):
    """torch.export (the route to ONNX and other runtimes) captures aten ops only, never the CPU-only
    oneDNN kernels of the eager path, and the exported program still gives the official logits."""
    model, io = tiny
    exported = torch.export.export(model, (io["x224"],))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "aten.linear.default" in targets
    assert not [t for t in targets if "mkldnn" in t]
    with torch.no_grad():
        logits = exported.module()(io["x224"])
    torch.testing.assert_close(logits, io["logits_x224"], atol=2e-5, rtol=0)


def test_output_stride_of_timm_clients():
    """segmentation_models_pytorch passes ``output_stride`` to every ``tu-`` encoder: the model's own
    stride is accepted, the dilated strides it cannot provide are refused naming the model and stride."""
    from rsvit.errors import ModelConfigError

    model = timm.create_model("vitaev2_s", features_only=True, output_stride=32).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        maps = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for stride in (8, 16):
        with pytest.raises(
            ModelConfigError, match=rf"vitaev2_s supports only output_stride=32 .*got {stride}"
        ):
            timm.create_model("vitaev2_s", features_only=True, output_stride=stride)
    with pytest.raises(ValueError, match=r"ViTAEv2 supports only output_stride=16"):
        ViTAEv2(downsample_ratios=(4, 2, 2, 1), output_stride=32)
    assert ViTAEv2(num_classes=0, depths=(1, 1, 1, 1), output_stride=32).total_stride == 32
