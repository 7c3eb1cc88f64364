"""The oneDNN linear layers agree with ``F.linear`` in value and gradient, and are actually used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsvit.models.backbones import fused_linear
from rsvit.models.backbones.fused_linear import FusedLinear, FusedMlp, fuse_linear_layers, linear


def _reference(x, weight, bias, activation):
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


@pytest.fixture
def op_calls(monkeypatch):
    """Counts calls of the oneDNN kernel (fails the test if the build has none)."""
    real = fused_linear._ONEDNN_LINEAR
    assert real is not None, "this PyTorch build has no oneDNN linear kernel"
    calls = []

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(fused_linear, "_ONEDNN_LINEAR", counting)
    return calls


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("bias", [True, False])
def test_inference_matches_plain_linear_and_fuses(op_calls, activation, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 9, 11, 24)
    layer = FusedLinear(24, 40, bias=bias, activation=activation)
    with torch.no_grad():
        out = layer(x)
    assert op_calls == [activation or "none"]  # one kernel call, activation inside it
    assert out.shape == (2, 9, 11, 40)
    torch.testing.assert_close(out, _reference(x, layer.weight, layer.bias, activation), atol=2e-6, rtol=1e-5)


def test_non_contiguous_input(op_calls):
    torch.manual_seed(0)
    x = torch.randn(6, 24, 5).transpose(1, 2)
    layer = FusedLinear(24, 8)
    with torch.inference_mode():
        out = layer(x)
    assert op_calls
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_gradients_match_plain_linear(op_calls, activation):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16, requires_grad=True)
    layer = FusedLinear(16, 12, activation=activation)
    out = layer(x)
    assert op_calls == ["none"]  # the activation stays a separate, differentiable op
    grad = torch.randn_like(out)
    out.backward(grad)
    ours = (x.grad, layer.weight.grad, layer.bias.grad)
    x.grad = layer.weight.grad = layer.bias.grad = None
    ref = _reference(x, layer.weight, layer.bias, activation)
    ref.backward(grad)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    for mine, theirs in zip(ours, (x.grad, layer.weight.grad, layer.bias.grad), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_frozen_weights_only_give_input_gradient(op_calls):
    torch.manual_seed(0)
    layer = FusedLinear(16, 12).requires_grad_(False)
    x = torch.randn(5, 16, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(5, 16), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_computes_in_bf16(op_calls):
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    layer = FusedLinear(32, 48, activation="gelu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        ref = F.gelu(F.linear(x, layer.weight, layer.bias))
    assert op_calls
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=0.03, rtol=0.02)


def test_without_onednn_falls_back_to_plain_linear(monkeypatch):
    monkeypatch.setattr(fused_linear, "_ONEDNN_LINEAR", None)
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    mlp = FusedMlp(8, 32, 8)
    with torch.no_grad():
        out = mlp(x)
    ref = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    assert torch.equal(out, ref)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        FusedLinear(4, 4, activation="relu")
    with pytest.raises(ValueError, match="activation must be one of"):
        linear(torch.zeros(1, 4), torch.zeros(4, 4), activation="tanh")


def test_state_dict_keys_are_those_of_timm_mlp():
    assert set(FusedMlp(8, 16, 8).state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_graph_capture_sees_portable_ops(op_calls):
    """torch.export and tracing (the routes to ONNX) record aten.linear/gelu, never the oneDNN kernel."""
    mlp = FusedMlp(8, 16, 8).eval()
    x = torch.randn(2, 8)
    exported = torch.export.export(mlp, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert targets == ["aten.linear.default", "aten.gelu.default", "aten.linear.default"]
    traced = torch.jit.trace(mlp, x, check_trace=False)
    assert "mkldnn" not in str(traced.graph)
    assert op_calls == []
    with torch.no_grad():
        torch.testing.assert_close(traced(x), mlp(x), atol=2e-6, rtol=1e-5)


def test_autocast_weight_copy_follows_weight_changes(op_calls):
    """The kept bfloat16 copy of the weights never goes stale."""
    torch.manual_seed(0)
    layer = FusedLinear(16, 8)
    x = torch.randn(4, 16)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return layer(x), F.linear(x, layer.weight, layer.bias)

    first, _ = run()
    kept = layer._cast[1]
    assert kept.dtype == torch.bfloat16
    run()
    assert layer._cast[1] is kept  # reused while the weights are unchanged
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # in place
    out, ref = run()
    assert not torch.allclose(out.float(), first.float(), atol=0.1)
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0.02)
    layer.load_state_dict({"weight": torch.randn(8, 16), "bias": torch.randn(8)})
    out, ref = run()
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0.02)


def test_fuse_linear_layers_on_a_timm_model_changes_nothing_but_speed(op_calls):
    import copy

    import timm
    from timm.layers import Mlp

    torch.manual_seed(0)
    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=5).eval()
    fused = copy.deepcopy(plain)
    params = {name: id(p) for name, p in fused.named_parameters()}
    swapped = fuse_linear_layers(fused)
    assert swapped == sum(type(m) is torch.nn.Linear for m in plain.modules()) > 0
    assert {name: id(p) for name, p in fused.named_parameters()} == params  # the same parameter objects
    assert list(fused.state_dict()) == list(plain.state_dict())
    mlps = [m for m in fused.modules() if isinstance(m, Mlp)]
    assert mlps and all(m.fc1.activation == "gelu" and isinstance(m.act, torch.nn.Identity) for m in mlps)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), atol=1e-5, rtol=1e-5)
    assert "gelu" in op_calls
    # Training: same gradients.
    fused.train(), plain.train()
    fused(x).square().sum().backward()
    plain(x).square().sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_fuse_linear_layers_keeps_approximate_gelu_separate():
    from timm.layers import Mlp

    mlp = Mlp(8, 16, act_layer=lambda: torch.nn.GELU(approximate="tanh"))
    fuse_linear_layers(mlp)
    assert isinstance(mlp.fc1, FusedLinear) and mlp.fc1.activation is None
    assert isinstance(mlp.act, torch.nn.GELU)
