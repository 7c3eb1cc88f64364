"""rsvit: Remote Sensing Vision Transformers in pure PyTorch.

Importing the package loads neither torch nor timm. Once timm is imported (before or after rsvit), timm
knows rsvit's backbones by name: ``timm.create_model("vitaev2_s", features_only=True)``.
"""

import importlib

from rsvit.utils.post_import import when_imported

__version__ = "0.1.0"

when_imported("timm", lambda _timm: importlib.import_module("rsvit.timm_models"))
