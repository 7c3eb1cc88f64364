"""CLIP models for language-prompted remote sensing: safe loading, templates, class names, zero-shot.

>>> from rsvit.models.clip import load_clip, resolve_templates, cached_text_classifier  # doctest: +SKIP
>>> clip = load_clip("RemoteCLIP-ViT-B-32.pt", model="remoteclip-vit-b-32")        # doctest: +SKIP
"""

from rsvit.models.clip.classnames import (
    DATASET_CLASS_NAMES,
    UnknownClassesError,
    known_datasets,
    plain_words,
    readable_names,
)
from rsvit.models.clip.loading import (
    CLIP_PRESETS,
    MEAN_THEN_NORMALISE,
    NORMALISE_THEN_MEAN,
    RECOGNISED_ARCHITECTURES,
    ClipPreset,
    LoadedClip,
    build_clip,
    clip_state_dict_from_file,
    load_clip,
    recognise_architecture,
    register_model_config,
    wrap_model,
)
from rsvit.models.clip.templates import (
    TEMPLATE_SETS,
    TemplateError,
    read_template_file,
    resolve_templates,
)
from rsvit.models.clip.zeroshot import (
    PromptTooLongError,
    ZeroShotClassifier,
    build_text_classifier,
    cached_text_classifier,
    tokenize_checked,
)

__all__ = [
    "CLIP_PRESETS",
    "DATASET_CLASS_NAMES",
    "MEAN_THEN_NORMALISE",
    "NORMALISE_THEN_MEAN",
    "RECOGNISED_ARCHITECTURES",
    "TEMPLATE_SETS",
    "ClipPreset",
    "LoadedClip",
    "PromptTooLongError",
    "TemplateError",
    "UnknownClassesError",
    "ZeroShotClassifier",
    "build_clip",
    "build_text_classifier",
    "cached_text_classifier",
    "clip_state_dict_from_file",
    "known_datasets",
    "load_clip",
    "plain_words",
    "read_template_file",
    "readable_names",
    "recognise_architecture",
    "register_model_config",
    "resolve_templates",
    "tokenize_checked",
    "wrap_model",
]
