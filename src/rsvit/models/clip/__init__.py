"""CLIP models for language-prompted remote sensing: safe loading, templates, class names, zero- and few-shot.

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
from rsvit.models.clip.fewshot import (
    FEW_SHOT_METHODS,
    CacheAdapterHead,
    SupportError,
    cache_adapter_logits,
    fit_linear_probe,
    image_features,
    sample_shots,
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
from rsvit.models.clip.scene import (
    CLIP_BACKBONE_PREFIX,
    ClipSceneClassifier,
    scene_metadata,
    scene_spec,
    zero_shot_head,
)
from rsvit.models.clip.templates import (
    TEMPLATE_SETS,
    TemplateError,
    read_template_file,
    resolve_templates,
)
from rsvit.models.clip.tiles import WindowScores
from rsvit.models.clip.zeroshot import (
    PromptTooLongError,
    ZeroShotClassifier,
    build_text_classifier,
    cached_text_classifier,
    tokenize_checked,
)

__all__ = [
    "CLIP_BACKBONE_PREFIX",
    "CLIP_PRESETS",
    "DATASET_CLASS_NAMES",
    "FEW_SHOT_METHODS",
    "MEAN_THEN_NORMALISE",
    "NORMALISE_THEN_MEAN",
    "RECOGNISED_ARCHITECTURES",
    "TEMPLATE_SETS",
    "CacheAdapterHead",
    "ClipPreset",
    "ClipSceneClassifier",
    "LoadedClip",
    "PromptTooLongError",
    "SupportError",
    "TemplateError",
    "UnknownClassesError",
    "WindowScores",
    "ZeroShotClassifier",
    "build_clip",
    "build_text_classifier",
    "cache_adapter_logits",
    "cached_text_classifier",
    "clip_state_dict_from_file",
    "fit_linear_probe",
    "image_features",
    "known_datasets",
    "load_clip",
    "plain_words",
    "read_template_file",
    "readable_names",
    "recognise_architecture",
    "register_model_config",
    "resolve_templates",
    "sample_shots",
    "scene_metadata",
    "scene_spec",
    "tokenize_checked",
    "wrap_model",
    "zero_shot_head",
]
