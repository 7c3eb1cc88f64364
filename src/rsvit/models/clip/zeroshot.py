"""Zero-shot classifiers from class names and prompt templates.

A class embedding is built from its templates filled with the class name, encoded by the text tower:

* ``normalise-then-mean`` (open_clip, SkyScript, RemoteCLIP-style evaluation): L2-normalise each
  template embedding, average, L2-normalise again;
* ``mean-then-normalise`` (GeoRSCLIP's ``zeroshot_classifier``): average the raw embeddings, then
  normalise — not the same vector, so reproducing each paper needs its own rule.

Logits are ``scale * normalise(image embedding) @ W.T`` with the fixed scale 100 of all three papers'
evaluation code (``logit_scale="model"`` uses the checkpoint's ``exp(logit_scale)`` instead); top-1 does
not depend on the scale, probabilities do.

Tokenisation is open_clip's (its BPE vocabulary ships in the wheel: no download). A prompt longer than
the text context is an error here, where open_clip would silently cut it.

Text classifiers are cached per (text weights, templates, class names, rule): in memory, and on disk
when a cache folder is given, so repeated evaluations of one checkpoint encode the prompts once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsvit.models.clip.loading import MEAN_THEN_NORMALISE, NORMALISE_THEN_MEAN
from rsvit.models.clip.templates import check_templates, fill_templates
from rsvit.utils.atomic import atomic_path

__all__ = [
    "AVERAGING_RULES",
    "DEFAULT_LOGIT_SCALE",
    "PromptTooLongError",
    "ZeroShotClassifier",
    "build_text_classifier",
    "cached_text_classifier",
    "text_fingerprint",
    "tokenize_checked",
]

AVERAGING_RULES = (NORMALISE_THEN_MEAN, MEAN_THEN_NORMALISE)
DEFAULT_LOGIT_SCALE = 100.0


class PromptTooLongError(ValueError):
    """A filled template does not fit the text tower's context (77 tokens for the CLIP models)."""


def tokenize_checked(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """``tokenizer(texts)`` after checking that no text would be cut to the context length."""
    context = int(tokenizer.context_length)
    for text in texts:
        length = len(tokenizer.encode(text)) + 2  # start and end of text
        if length > context:
            raise PromptTooLongError(
                f"prompt {text[:80]!r}{'...' if len(text) > 80 else ''} is {length} tokens, the text encoder "
                f"takes {context}; shorten the template or the class name"
            )
    return tokenizer(list(texts))


@torch.no_grad()
def build_text_classifier(
    model: nn.Module,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str],
    averaging: str = NORMALISE_THEN_MEAN,
    batch_size: int = 256,
) -> torch.Tensor:
    """Class embeddings ``(num_classes, dim)``, unit length, in the order of ``class_names``."""
    if averaging not in AVERAGING_RULES:
        raise ValueError(f"averaging must be one of {AVERAGING_RULES}, got {averaging!r}")
    if not class_names:
        raise ValueError("no class names")
    templates = check_templates(templates)
    device = next(model.parameters()).device
    texts = [text for name in class_names for text in fill_templates(templates, name)]
    tokens = tokenize_checked(tokenizer, texts)
    parts = [
        model.encode_text(tokens[i : i + batch_size].to(device)) for i in range(0, len(texts), batch_size)
    ]
    embeddings = torch.cat(parts).float().reshape(len(class_names), len(templates), -1)
    if averaging == NORMALISE_THEN_MEAN:
        embeddings = F.normalize(embeddings, dim=-1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def text_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the text tower's tensors (everything outside ``visual.``): the cache key of a model."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if key.startswith("visual."):
            continue
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


_MEMORY_CACHE: dict[str, torch.Tensor] = {}


def cached_text_classifier(
    model: nn.Module,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str],
    averaging: str = NORMALISE_THEN_MEAN,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, bool]:
    """:func:`build_text_classifier` through the cache; returns the weights and whether they were cached."""
    from safetensors.torch import load_file, save_file

    spec = {
        "model": text_fingerprint(model),
        "templates": list(templates),
        "classes": list(class_names),
        "averaging": averaging,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key].clone(), True
    path = Path(cache_dir) / f"text-classifier-{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        weights = load_file(str(path))["weights"]
        _MEMORY_CACHE[key] = weights
        return weights.clone(), True
    weights = build_text_classifier(model, tokenizer, class_names, templates, averaging).cpu()
    _MEMORY_CACHE[key] = weights
    if path is not None:
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({"weights": weights.contiguous()}, str(tmp), metadata={"spec": json.dumps(spec)})
    return weights.clone(), False


@dataclass
class ZeroShotClassifier:
    """Image classifier from a CLIP image tower and text-built class embeddings.

    Attributes:
        model: the open_clip model (only ``encode_image`` is used here).
        weights: ``(num_classes, dim)`` unit class embeddings.
        logit_scale: multiplier of the cosine similarities (100 in the papers' code).
    """

    model: nn.Module
    weights: torch.Tensor
    logit_scale: float = DEFAULT_LOGIT_SCALE

    @classmethod
    def scale_from(cls, model: nn.Module, choice: str | float) -> float:
        """``"fixed"`` -> 100, ``"model"`` -> ``exp(model.logit_scale)``, a number -> itself."""
        if choice == "fixed":
            return DEFAULT_LOGIT_SCALE
        if choice == "model":
            return float(model.logit_scale.detach().exp())
        return float(choice)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` logits for preprocessed images ``(B, 3, H, W)``."""
        features = F.normalize(self.model.encode_image(images).float(), dim=-1)
        return self.logit_scale * features @ self.weights.to(features.device).T

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class indices ``(B,)`` and softmax probabilities ``(B, num_classes)``."""
        probabilities = self.logits(images).softmax(dim=-1)
        return probabilities.argmax(dim=-1), probabilities
