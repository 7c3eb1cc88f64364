"""The zero-shot text classifier against an independent computation, tokenisation, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_clip import seeded_tiny_clip

from rsvit.models.clip import (
    MEAN_THEN_NORMALISE,
    NORMALISE_THEN_MEAN,
    PromptTooLongError,
    ZeroShotClassifier,
    build_text_classifier,
    cached_text_classifier,
    tokenize_checked,
    wrap_model,
)
from rsvit.models.clip.zeroshot import _MEMORY_CACHE

CLASSES = ["river or lake", "parking lot", "forest"]
TEMPLATES = ("a satellite photo of {}.", "an aerial image of the {}", "a remote sensing image of many {}.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    name, model = seeded_tiny_clip(tmp_path_factory.mktemp("cfg"), seed=5)
    return wrap_model(model, name)


def _independent(clip, averaging):
    """Each prompt encoded alone, float64 numpy averaging."""
    rows = []
    for name in CLASSES:
        embeddings = []
        for template in TEMPLATES:
            tokens = clip.tokenizer([template.format(name)])
            with torch.no_grad():
                embeddings.append(clip.model.encode_text(tokens)[0].double().numpy())
        e = np.stack(embeddings)
        if averaging == NORMALISE_THEN_MEAN:
            e = e / np.linalg.norm(e, axis=1, keepdims=True)
        mean = e.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


@pytest.mark.parametrize("averaging", [NORMALISE_THEN_MEAN, MEAN_THEN_NORMALISE])
def test_classifier_equals_independent_computation(tiny, averaging):
    weights = build_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, averaging, batch_size=4)
    assert weights.shape == (3, 32)
    np.testing.assert_allclose(weights.double().numpy(), _independent(tiny, averaging), atol=1e-5)


def test_the_two_rules_differ(tiny):
    a = build_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, NORMALISE_THEN_MEAN)
    b = build_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, MEAN_THEN_NORMALISE)
    assert (a - b).abs().max() > 1e-4


def test_logits_and_scales(tiny):
    weights = build_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES)
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        features = tiny.model.encode_image(images).double()
    features = features / features.norm(dim=-1, keepdim=True)
    expected = 100.0 * features @ weights.double().T
    classifier = ZeroShotClassifier(tiny.model, weights, ZeroShotClassifier.scale_from(tiny.model, "fixed"))
    torch.testing.assert_close(classifier.logits(images).double(), expected, atol=1e-4, rtol=1e-5)
    predicted, probabilities = classifier.predict(images)
    assert torch.equal(predicted, expected.argmax(dim=-1))
    torch.testing.assert_close(probabilities.sum(dim=-1), torch.ones(4))
    model_scale = ZeroShotClassifier.scale_from(tiny.model, "model")
    assert model_scale == pytest.approx(float(tiny.model.logit_scale.detach().exp()))
    assert model_scale != pytest.approx(100.0)


def test_tokenizer_is_offline_and_exact(tiny):
    tokens = tokenize_checked(tiny.tokenizer, ["A Satellite photo of airport."])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.int64
    assert tokens[0, :9].tolist() == [49406, 320, 10316, 1125, 539, 3259, 269, 49407, 0]


def test_prompt_longer_than_the_context(tiny):
    long_name = " ".join(["airport"] * 80)
    with pytest.raises(PromptTooLongError, match=r"is 8\d tokens, the text encoder takes 77"):
        build_text_classifier(tiny.model, tiny.tokenizer, [long_name], TEMPLATES)
    fits = " ".join(["airport"] * 70)  # 75 tokens with start and end: fine
    assert tokenize_checked(tiny.tokenizer, [fits])[0, 71].item() == 49407


def test_cache_per_model_templates_and_classes(tiny, tmp_path):
    _MEMORY_CACHE.clear()
    first, cached = cached_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, cache_dir=tmp_path)
    assert not cached and len(list(tmp_path.glob("text-classifier-*.safetensors"))) == 1
    again, cached = cached_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, cache_dir=tmp_path)
    assert cached and torch.equal(first, again)
    _MEMORY_CACHE.clear()
    from_disk, cached = cached_text_classifier(
        tiny.model, tiny.tokenizer, CLASSES, TEMPLATES, cache_dir=tmp_path
    )
    assert cached and torch.equal(first, from_disk)
    _, cached = cached_text_classifier(tiny.model, tiny.tokenizer, CLASSES[:2], TEMPLATES, cache_dir=tmp_path)
    assert not cached
    _, cached = cached_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES[:1], cache_dir=tmp_path)
    assert not cached
    with torch.no_grad():  # other text weights: another key
        tiny.model.token_embedding.weight[320] += 1.0
    try:
        changed, cached = cached_text_classifier(tiny.model, tiny.tokenizer, CLASSES, TEMPLATES)
        assert not cached and not torch.equal(changed, first)
    finally:
        with torch.no_grad():
            tiny.model.token_embedding.weight[320] -= 1.0
