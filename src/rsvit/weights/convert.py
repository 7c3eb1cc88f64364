"""Key conversion from official checkpoint layouts to the layouts of our (timm-based) models.

Converters are registered per architecture family with :func:`register_converter` and applied with
:func:`convert_state_dict`. A converter receives the official state dict (already unwrapped by
:func:`rsvit.weights.formats.read_checkpoint`) and, when available, the target model, which lets it
drop a classifier whose class count differs or resize position tables. Without a model the
conversion is purely by name, which is what ``rsvit convert`` does.

The converters of timm's own layouts (ResNet, Swin) are defined here. A model rsvit defines registers
its converter from its own module, beside the model (as timm keeps ``checkpoint_filter_fn``). Those
modules are named in :data:`CONVERTER_PROVIDERS`, as data, and imported the first time a family is
looked up: ``rsvit.weights`` works when it is all a user imported, and never imports model code itself.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from rsvit.weights.errors import WeightsError

__all__ = [
    "CONVERTER_PROVIDERS",
    "Converter",
    "align_feature_names",
    "available_families",
    "convert_state_dict",
    "guess_family",
    "infer_family",
    "register_converter",
    "split_prefix",
    "strip_prefixes",
]

StateDict = dict[str, torch.Tensor]
Converter = Callable[[StateDict, nn.Module | None], StateDict]

_CONVERTERS: dict[str, Converter] = {}

# Modules whose import registers further converters (the model packages); extend it for plugins.
CONVERTER_PROVIDERS: list[str] = ["rsvit.models"]
_imported_providers: set[str] = set()
_provider_errors: dict[str, str] = {}


def _import_providers() -> None:
    """Imports each provider once.

    A provider that fails to import is reported, not fatal, so the families registered here (and by the
    other providers) keep working.
    """
    for name in CONVERTER_PROVIDERS:
        if name in _imported_providers:
            continue
        _imported_providers.add(name)  # before importing: a provider may look up families while loading
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _provider_errors[name] = f"{type(exc).__name__}: {exc}"


def _registered() -> dict[str, Converter]:
    _import_providers()
    return _CONVERTERS


def register_converter(family: str) -> Callable[[Converter], Converter]:
    """Decorator registering ``fn(state_dict, model) -> state_dict`` for an architecture family."""

    def decorator(fn: Converter) -> Converter:
        if family in _CONVERTERS and _CONVERTERS[family] is not fn:
            raise ValueError(f"a converter for family {family!r} is already registered")
        _CONVERTERS[family] = fn
        return fn

    return decorator


def available_families() -> tuple[str, ...]:
    """Every family a converter is registered for, those of :data:`CONVERTER_PROVIDERS` included."""
    return tuple(sorted(_registered()))


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], family: str | None, model: nn.Module | None = None
) -> StateDict:
    """Rename (and where needed drop) entries of an official state dict into our layout.

    ``family=None`` only removes a ``module.`` prefix shared by every key (DataParallel).
    """
    state_dict = dict(state_dict)
    if family is None:
        return _strip_uniform(state_dict, "module.")
    converter = _registered().get(family)
    if converter is None:
        failed = "".join(f"; {name} failed to import ({error})" for name, error in _provider_errors.items())
        raise WeightsError(
            f"no weights converter for family {family!r}; known families: {', '.join(available_families())}"
            f"{failed}"
        )
    return converter(state_dict, model)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def split_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The entries under ``prefix`` with the prefix removed, e.g. the ``backbone.`` part of an mmseg file."""
    if prefix and not prefix.endswith("."):
        prefix += "."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> StateDict:
    """Remove any of ``prefixes`` from the start of each key, repeatedly (``module.backbone.x`` -> ``x``)."""
    prefixes = tuple(prefixes)
    return {_strip_key(key, prefixes): value for key, value in state_dict.items()}


def _strip_key(key: str, prefixes: tuple[str, ...]) -> str:
    while key.startswith(prefixes):
        key = key[len(next(p for p in prefixes if key.startswith(p))) :]
    return key


def _backbone_part(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Without ``module.`` prefixes; of a whole segmentor/change detector only the ``backbone.`` part."""
    state_dict = strip_prefixes(state_dict, ("module.",))
    if any(k.startswith("backbone.") for k in state_dict):
        return split_prefix(state_dict, "backbone.")
    return state_dict


def _strip_uniform(state_dict: StateDict, prefix: str) -> StateDict:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _drop_unusable_heads(
    state_dict: StateDict, model: nn.Module | None, head_prefixes: tuple[str, ...]
) -> StateDict:
    """Drop classifier entries the model has no slot for, or whose shape (class count) differs."""
    if model is None:
        return state_dict
    target = model.state_dict()
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith(head_prefixes) and (key not in target or target[key].shape != value.shape):
            continue
        out[key] = value
    return out


def infer_family(model: nn.Module) -> str | None:
    """Family of a model: its ``weights_family`` attribute, else recognised timm classes/configs."""
    family = getattr(model, "weights_family", None)
    if isinstance(family, str):
        return family
    name = type(model).__name__
    if name == "ResNet":
        return "resnet"
    if name == "SwinTransformer":
        return "swin"
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture = str(cfg.get("architecture", "")) if isinstance(cfg, Mapping) else ""
    for prefix, fam in (("vitaev2", "vitaev2"), ("swin", "swin"), ("resnet", "resnet")):
        if architecture.startswith(prefix) and fam in _registered():
            return fam
    return None


def guess_family(state_dict: Mapping[str, Any]) -> str | None:
    """Best guess of the architecture family from key names alone (for hints and ``rsvit convert``)."""
    keys = [_strip_key(k, ("module.", "backbone.")) for k in state_dict]
    joined = set(keys)
    if any(re.match(r"layers\.\d+\.(RC|NC)\.", k) for k in keys):
        return "vitaev2"
    if any(k.endswith("relative_position_bias_table") for k in keys) and any(
        re.match(r"layers\.\d+\.blocks\.\d+\.", k) for k in keys
    ):
        return "swin"
    if {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"} <= joined:
        return "resnet"
    return None


# ----------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------


@register_converter("resnet")
def _convert_resnet(state_dict: StateDict, model: nn.Module | None) -> StateDict:
    """From torchvision ResNet (RSP) to timm ``ResNet``.

    The two layouts use identical names (``conv1``, ``bn1``, ``layerN.i.convK``, ``downsample.0/1``,
    ``fc``), so only wrappers are removed (``module.``; a ``backbone.`` part is selected) and ``fc.*`` is
    dropped when the model's class count differs or it has no classifier.
    """
    state_dict = _backbone_part(state_dict)
    return _drop_unusable_heads(state_dict, model, ("fc.",))


class _ShapeView:
    """Just enough of a SwinTransformer for timm's filter when no (compatible) model is at hand.

    It reports the checkpoint's own shapes, so the filter renames keys without resizing anything.
    """

    def __init__(self, state_dict: StateDict, model: nn.Module | None) -> None:
        self._state_dict = state_dict
        self._model = model
        weight = state_dict.get("patch_embed.proj.weight")
        if model is not None and hasattr(model, "patch_embed"):
            self.patch_embed = model.patch_embed
        elif weight is not None:
            self.patch_embed = _Namespace(proj=_Namespace(weight=weight))

    def get_submodule(self, name: str) -> Any:
        if self._model is not None:
            try:
                return self._model.get_submodule(name)
            except AttributeError:
                pass
        table = self._state_dict[f"{name}.relative_position_bias_table"]
        side = (round(table.shape[0] ** 0.5) + 1) // 2
        return _Namespace(relative_position_bias_table=table, window_size=(side, side))


class _Namespace:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@register_converter("swin")
def _convert_swin(state_dict: StateDict, model: nn.Module | None) -> StateDict:
    """Microsoft Swin layout (RSP) -> timm ``SwinTransformer`` via timm's own checkpoint filter.

    timm's filter moves patch merging from the end of stage i to the start of stage i+1, renames
    ``head`` to ``head.fc`` and drops ``relative_position_index`` / ``attn_mask`` buffers; with a model it
    also resizes patch embedding and relative-position tables to the model's window.
    """
    from timm.models.swin_transformer import checkpoint_filter_fn

    state_dict = _backbone_part(state_dict)
    view = model if type(model).__name__ == "SwinTransformer" else _ShapeView(state_dict, model)
    converted = checkpoint_filter_fn(state_dict, view)
    converted = _drop_unusable_heads(converted, model, ("head.",))
    if model is not None and "norm.weight" not in model.state_dict():
        converted = {k: v for k, v in converted.items() if k not in ("norm.weight", "norm.bias")}
    return converted


def align_feature_names(state_dict: StateDict, target_keys: Iterable[str]) -> StateDict:
    """Match names to timm's feature wrappers.

    ``layers.0.x`` -> ``layers_0.x`` (``FeatureListNet``
    flattens sequential stages) and ``x`` -> ``model.x`` (``FeatureGetterNet`` keeps the model inside).

    Keys the model already has, or that match no wrapper name, are left unchanged.
    """
    target = set(target_keys)
    out: StateDict = {}
    for key, value in state_dict.items():
        if key not in target:
            flat = re.sub(r"^([A-Za-z_]\w*)\.(\d+)\.", r"\1_\2.", key, count=1)
            for candidate in (flat, f"model.{key}"):
                if candidate in target:
                    key = candidate
                    break
        out[key] = value
    return out
