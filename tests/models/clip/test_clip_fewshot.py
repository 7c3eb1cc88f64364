"""Few-shot CLIP: the cache adapter against an independent computation, the linear probe, shot sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsvit.models.clip import (
    CacheAdapterHead,
    SupportError,
    cache_adapter_logits,
    fit_linear_probe,
    sample_shots,
)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float()


def test_cache_adapter_equals_an_independent_computation():
    rng = np.random.default_rng(0)
    classes, dim, shots = 4, 16, 3
    text = _unit(rng.normal(size=(classes, dim)))
    keys = _unit(rng.normal(size=(classes * shots, dim)))
    labels = np.repeat(np.arange(classes), shots)
    tests = _unit(rng.normal(size=(5, dim)))
    alpha, beta, scale = 2.5, 5.5, 100.0

    # loops in float64: for every test image and class, the zero-shot cosine plus the summed affinities
    expected = np.zeros((5, classes))
    for i, f in enumerate(tests):
        for c in range(classes):
            cache = sum(np.exp(-beta * (1.0 - f @ k)) for k, y in zip(keys, labels, strict=True) if y == c)
            expected[i, c] = scale * f @ text[c] + alpha * cache

    label_t = torch.from_numpy(labels)
    head = CacheAdapterHead(_t(text), _t(keys), label_t, scale, alpha, beta)
    np.testing.assert_allclose(head(_t(tests)).double().numpy(), expected, rtol=1e-5, atol=1e-4)
    values = F.one_hot(label_t, classes).float()
    direct = cache_adapter_logits(_t(tests), _t(keys), values, _t(text), scale, alpha, beta)
    torch.testing.assert_close(direct, head(_t(tests)))
    # alpha 0 is the zero-shot classifier; with a strong cache every shot goes to its own class
    zero = CacheAdapterHead(_t(text), _t(keys), label_t, scale, 0.0, beta)
    torch.testing.assert_close(zero(_t(tests)), scale * _t(tests) @ _t(text).T)
    strong = CacheAdapterHead(_t(text), _t(keys), label_t, 1.0, 50.0, 20.0)
    assert torch.equal(strong(_t(keys)).argmax(dim=1), label_t)


def _separable(seed: int, per_class: int, centres: torch.Tensor | None = None, noise: float = 0.35):
    generator = torch.Generator().manual_seed(seed)
    if centres is None:
        centres = F.normalize(torch.randn(5, 24, generator=generator), dim=1)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    points = centres[labels] + noise * torch.randn(len(labels), 24, generator=generator) / 24**0.5
    return F.normalize(points, dim=1), labels, centres


def test_linear_probe_fits_the_shots_and_generalises():
    train, labels, centres = _separable(1, per_class=4)
    head = fit_linear_probe(train, labels, 5, weight_decay=1e-4)
    assert torch.equal(head(train).argmax(dim=1), labels)  # fits the shots
    test, test_labels, _ = _separable(2, per_class=40, centres=centres)
    accuracy = float((head(test).argmax(dim=1) == test_labels).float().mean())
    assert accuracy > 0.9  # chance is 0.2
    again = fit_linear_probe(train, labels, 5, weight_decay=1e-4)  # deterministic
    torch.testing.assert_close(again.weight, head.weight)


def test_linear_probe_stays_at_its_anchor_under_a_strong_penalty():
    train, labels, _ = _separable(3, per_class=2)
    anchor = torch.randn(5, 24)
    head = fit_linear_probe(train, labels, 5, init=anchor, weight_decay=1e6)
    torch.testing.assert_close(head.weight, anchor, atol=1e-4, rtol=0)
    free = fit_linear_probe(train, labels, 5, init=anchor, weight_decay=1e-4)
    assert (free.weight - anchor).abs().max() > 1e-2
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        fit_linear_probe(train, labels, 5, weight_decay=-1.0)


def test_sample_shots_is_seeded_stratified_and_checked():
    labels = [0] * 5 + [1] * 3 + [2] * 4
    classes = ["a", "b", "c"]
    chosen = sample_shots(labels, classes, 3, seed=7)
    assert [labels[i] for i in chosen] == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(set(chosen)) == 9
    assert sample_shots(labels, classes, 3, seed=7) == chosen
    assert any(sample_shots(labels, classes, 3, seed=s) != chosen for s in range(8))
    with pytest.raises(SupportError, match=r"fewer images of \{'b': 3\}"):
        sample_shots(labels, classes, 4)
    with pytest.raises(SupportError, match=r"classes without shots: \['d'\]"):
        sample_shots(labels, [*classes, "d"], 1)
    with pytest.raises(SupportError, match="holds no images"):
        sample_shots([], classes, 1)
    with pytest.raises(SupportError, match="at least 1"):
        sample_shots(labels, classes, 0)
