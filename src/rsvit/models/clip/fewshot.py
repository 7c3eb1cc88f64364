"""Few-shot CLIP classifiers from k labelled images per class: a cache adapter and a linear probe.

Both work on frozen, L2-normalised image embeddings ``f`` of the CLIP image tower.

* **Cache adapter** (training-free, after Tip-Adapter, Zhang et al., ECCV 2022): the shots' embeddings are
  the keys ``K`` ``(N, D)``, their one-hot labels the values ``V`` ``(N, C)``. A test embedding's affinity
  to each key is ``A = exp(-beta * (1 - f K^T))`` (1 for an identical image, falling with the cosine
  distance), and the logits are the zero-shot ones plus the affinity-weighted labels:
  ``logits = scale * f W^T + alpha * A V``. ``alpha`` weighs what the shots say against the text, ``beta``
  how sharply the affinity falls; nothing is trained.
* **Linear probe**: multinomial logistic regression on the embeddings, ``logits = f W^T + b``, fitted on the
  shots by full-batch L-BFGS (deterministic: no sampling) with an L2 penalty
  ``weight_decay / 2 * ||W - W0||^2``. ``W0`` is the zero-shot classifier ``scale * text embeddings`` when
  given (the probe starts there and stays near it when shots are few), zero otherwise (plain ridge-style
  logistic regression).

:func:`sample_shots` draws the k images per class (seeded) and says clearly when a class has too few.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FEW_SHOT_METHODS",
    "CacheAdapterHead",
    "SupportError",
    "cache_adapter_logits",
    "fit_linear_probe",
    "image_features",
    "sample_shots",
]

FEW_SHOT_METHODS = ("cache", "probe")


class SupportError(ValueError):
    """The support set cannot give k shots for every class (empty, too small, classes missing)."""


def sample_shots(labels: Sequence[int], classes: Sequence[str], shots: int, seed: int = 0) -> list[int]:
    """Indices of ``shots`` items per class, drawn without replacement with ``seed``; class order kept.

    Raises:
        SupportError: ``shots < 1``, an empty support, a class with no image or with fewer than ``shots``.
    """
    if shots < 1:
        raise SupportError(f"the number of shots must be at least 1, got {shots}")
    if len(labels) == 0:
        raise SupportError("the support set holds no images; point --support at class folders with images")
    labels_array = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels_array[labels_array >= 0], minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise SupportError(
            f"classes without shots: {empty}; the support set needs at least {shots} images of every class"
        )
    short = {classes[i]: int(counts[i]) for i in range(len(classes)) if counts[i] < shots}
    if short:
        raise SupportError(
            f"{shots} shots per class asked for, but the support set has fewer images of {short}; lower "
            "--shots or add images"
        )
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in range(len(classes)):
        members = np.flatnonzero(labels_array == label)
        chosen.extend(sorted(int(i) for i in rng.choice(members, size=shots, replace=False)))
    return chosen


@torch.no_grad()
def image_features(
    encode: Any, batches: Iterable[torch.Tensor], device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Unit embeddings ``(N, D)`` (float32, CPU) of preprocessed image batches through ``encode``."""
    parts = [F.normalize(encode(images.to(device)).float(), dim=-1).cpu() for images in batches]
    if not parts:
        raise SupportError("no images to embed")
    return torch.cat(parts)


def cache_adapter_logits(
    features: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    text_weights: torch.Tensor,
    logit_scale: float,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """``logit_scale * f W^T + alpha * exp(-beta * (1 - f K^T)) V`` for unit features ``f``."""
    affinity = torch.exp(-beta * (1.0 - features @ keys.T))
    return logit_scale * features @ text_weights.T + alpha * affinity @ values


class CacheAdapterHead(nn.Module):
    """The cache adapter as a head on unit image embeddings; keys, values and text weights are buffers.

    Args:
        text_weights: ``(C, D)`` unit class embeddings (the zero-shot classifier).
        keys: ``(N, D)`` unit embeddings of the shots.
        labels: ``(N,)`` class index of each shot (the values are their one-hot rows).
        logit_scale, alpha, beta: see the module docstring.
    """

    def __init__(
        self,
        text_weights: torch.Tensor,
        keys: torch.Tensor,
        labels: torch.Tensor,
        logit_scale: float = 100.0,
        alpha: float = 1.0,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if keys.ndim != 2 or text_weights.ndim != 2 or keys.shape[1] != text_weights.shape[1]:
            raise ValueError(
                f"keys {tuple(keys.shape)} and text weights {tuple(text_weights.shape)} must be (N, D) and "
                "(C, D) embeddings of one size"
            )
        num_classes = text_weights.shape[0]
        values = F.one_hot(labels.long(), num_classes).float() if len(labels) else torch.zeros(0, num_classes)
        self.register_buffer("text_weights", text_weights.float().clone())
        self.register_buffer("keys", keys.float().clone())
        self.register_buffer("values", values)
        self.logit_scale = float(logit_scale)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cache_adapter_logits(
            features, self.keys, self.values, self.text_weights, self.logit_scale, self.alpha, self.beta
        )


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    init: torch.Tensor | None = None,
    weight_decay: float = 1e-3,
    max_iter: int = 300,
) -> nn.Linear:
    """A linear head fitted to ``features`` / ``labels`` (see the module docstring).

    Args:
        features: ``(N, D)`` unit embeddings of the shots.
        labels: ``(N,)`` class indices.
        num_classes: outputs of the head.
        init: ``(C, D)`` starting weights and anchor of the penalty (the scaled zero-shot classifier), or
            ``None`` for zero.
        weight_decay: strength of the penalty towards ``init``.
        max_iter: L-BFGS iterations.
    """
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    x = features.detach().double()
    y = labels.long()
    anchor = torch.zeros(num_classes, x.shape[1], dtype=torch.float64) if init is None else init.double()
    weight = anchor.clone().requires_grad_(True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y)
        loss = loss + 0.5 * weight_decay * (weight - anchor).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(weight.detach().float())
        head.bias.copy_(bias.detach().float())
    return head
