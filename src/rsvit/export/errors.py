"""Errors raised while exporting a model or loading an exported one."""

from __future__ import annotations

__all__ = ["ExportError", "MissingMetadataError"]


class ExportError(RuntimeError):
    """A model could not be exported (unsupported operator or model kind); the message names both."""


class MissingMetadataError(ValueError):
    """An exported file lacks the rsvit metadata needed to run it without the original model file."""
