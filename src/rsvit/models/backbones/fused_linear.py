"""Linear layers that run on oneDNN on CPU, with the bias and an optional GELU fused into the matmul.

``F.linear`` on CPU computes ``addmm``: the bias is first broadcast into the whole output, then the
BLAS matmul accumulates onto it, and GELU is a separate pass. On token maps of tens of thousands of
rows those extra passes cost as much as the matmul. oneDNN's inner-product primitive applies bias and
activation while the result is still in registers. Measured on 2 cores (AMD EPYC, fp32, 25088 x 64 ->
256, the MLP of ViTAEv2 stage 0): 9.5-12 ms for ``F.linear`` and 9.3-27 ms with GELU, against 6.2-6.3 and
6.6-8.7 ms; the spread is the host's memory speed, which the separate passes feel most. Part of the gap
is the float32 BLAS itself (MKL), which on this AMD CPU is slower than oneDNN's own kernels; on other
CPUs the gain may be smaller. In whole models (interleaved A/B, fp32 forward at batch 8) it gave Swin-T
+14 to +23% and ViTAEv2-S -6 to +24% (median +6%); training and bfloat16 stayed within noise.

The oneDNN entry point (``torch.ops.mkldnn._linear_pointwise``) is the one PyTorch's own compiler
emits for CPU. It is used only where it is known to apply: CPU tensors in float32 or bfloat16 (under
CPU autocast the inputs are cast as autocast would). It has no autograd formula of its own, so when
gradients are recorded the product runs through :class:`_OneDNNLinear`, whose backward pass computes
the input gradient on oneDNN as well and the weight gradient with ``torch.mm`` (the faster of the two
there); the activation then stays a separate op. GPUs and builds without oneDNN take ``F.linear``.
Numerics agree with ``F.linear`` up to rounding. Weights and state-dict keys are those of ``nn.Linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["FusedLinear", "FusedMlp", "fuse_linear_layers", "linear"]

_ACTIVATIONS = (None, "gelu")


def _onednn_linear_op():
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


_ONEDNN_LINEAR = _onednn_linear_op()


def _records_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _eager() -> bool:
    """False while a graph is being captured (torch.export, torch.compile, ONNX, TorchScript).

    Those see the portable ``F.linear`` and do their own fusion.
    """
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


def _compute_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype the oneDNN path would compute in, or None when it does not apply."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return dtype
    return None


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` on oneDNN with a hand-written backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # grad @ weight, written as a linear layer whose weight is weight.T.
            grad_x = _ONEDNN_LINEAR(grad2d, weight.t().contiguous(), None, "none", [], "").view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = grad2d.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """``activation(F.linear(x, weight, bias))``, fused on CPU at inference.

    ``activation`` is None or "gelu" (the exact, erf form).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if _ONEDNN_LINEAR is not None and x.device.type == "cpu" and _eager():
        dtype = _compute_dtype(x)
        if dtype is not None:
            x, weight = x.to(dtype).contiguous(), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
            if _records_grad(x, weight, bias):
                out = _OneDNNLinear.apply(x, weight, bias)
            elif activation == "gelu":
                return _ONEDNN_LINEAR(x, weight, bias, "gelu", [], "none")
            else:
                return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
            return F.gelu(out) if activation == "gelu" else out
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


class FusedLinear(nn.Linear):
    """``nn.Linear`` (optionally followed by exact GELU) computed by :func:`linear`.

    Under CPU autocast at inference the reduced-precision copy of the weights is kept between calls
    (autocast itself recasts them in every new autocast region; that was 4% of a bfloat16 ViTAEv2-S
    forward). The copy is dropped as soon as the weights change (in place, by loading, or by moving).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation
        self._cast: tuple[tuple, Tensor, Tensor | None] | None = None

    def _autocast_weights(self) -> tuple[Tensor, Tensor | None]:
        weight, bias = self.weight, self.bias
        if (
            weight.device.type != "cpu"
            or not torch.is_autocast_enabled("cpu")
            or _records_grad(weight, bias)
            or not _eager()
        ):
            return weight, bias
        dtype = torch.get_autocast_dtype("cpu")
        if dtype == weight.dtype:
            return weight, bias
        key = (dtype, weight.data_ptr(), weight._version)
        if bias is not None:
            key += (bias.data_ptr(), bias._version)
        if self._cast is None or self._cast[0] != key:
            self._cast = (key, weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype))
        return self._cast[1], self._cast[2]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self._autocast_weights()
        return linear(x, weight, bias, self.activation)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return super().extra_repr() + act


class FusedMlp(nn.Module):
    """Linear -> exact GELU -> Linear, with timm's ``Mlp`` key names (``fc1``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = FusedLinear(in_features, hidden_features, activation="gelu")
        self.fc2 = FusedLinear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


def fuse_linear_layers(model: nn.Module) -> int:
    """Swaps every plain ``nn.Linear`` in ``model`` for a :class:`FusedLinear`; returns how many moved.

    Each holds the same parameters, and the exact GELU of timm ``Mlp`` blocks moves into their first
    layer.

    Keys, parameters (the very same objects) and outputs up to rounding are unchanged, so it is safe on
    any timm model before weights are loaded or an optimiser is built. Measured on 2 cores, fp32 forward
    at batch 8, over several runs: Swin-T +8 to +20%, ViT-B/16 +8 to +33%.
    """
    from timm.layers import Mlp

    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                fused = FusedLinear(
                    child.in_features, child.out_features, bias=child.bias is not None, device="meta"
                )
                fused.weight = child.weight
                fused.bias = child.bias
                setattr(parent, name, fused)
                swapped += 1
    for block in model.modules():
        if (
            isinstance(block, Mlp)
            and isinstance(block.fc1, FusedLinear)
            and block.fc1.activation is None
            and type(block.act) is nn.GELU
            and block.act.approximate == "none"
        ):
            block.fc1.activation = "gelu"
            block.act = nn.Identity()
    return swapped
