"""Models: backbones with one multi-scale feature API, task heads and whole models.

Importing the package imports every module and package directly under it, so each whole-model builder
(:func:`~rsvit.models.registry.register_task_model`) and each official-checkpoint converter
(:func:`rsvit.weights.register_converter`) registers itself: a new model family is a new package here,
with no list to extend.
"""

import importlib
import pkgutil

from rsvit.models.backbones import Backbone, create_backbone, list_backbones
from rsvit.models.registry import register_task_model, task_heads, task_names
from rsvit.models.spec import ModelSpec, build_model, load_model, save_model

__all__ = [
    "Backbone",
    "ModelSpec",
    "build_model",
    "create_backbone",
    "list_backbones",
    "load_model",
    "register_task_model",
    "save_model",
    "task_heads",
    "task_names",
]


def _import_model_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_model_modules()
