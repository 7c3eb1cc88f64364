"""rsvit: Remote Sensing Vision Transformers in pure PyTorch."""

__version__ = "0.1.0"
