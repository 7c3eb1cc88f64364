"""The error types rsvit raises for problems a user can fix (bad files, bad descriptions, bad arguments).

Every one derives from :class:`RsvitError`, so a command can report any of them as one line with a
single ``except`` clause, while library users and tests can still tell the cases apart. Types that
describe invalid values also derive from ``ValueError``, so older ``except ValueError`` code keeps
catching them.
"""

from __future__ import annotations

__all__ = ["ModelConfigError", "ModelSpecError", "RsvitError"]


class RsvitError(Exception):
    """Base class of every error rsvit raises on purpose with a message meant for the user."""


class ModelConfigError(RsvitError, ValueError):
    """A model was asked for something it cannot be built with (an argument it cannot honour)."""


class ModelSpecError(ModelConfigError):
    """A model description is invalid or does not fit the tensors stored beside it.

    The description is a ``ModelSpec``, e.g. read from a model file.
    """
