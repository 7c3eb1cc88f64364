"""Exceptions raised while reading, converting and loading weights.

Every error derives from :class:`WeightsError` so callers (the CLI in particular) can report any
weights problem with one ``except`` clause, while tests and library users can tell the cases apart.
"""

from __future__ import annotations

from rsvit.errors import RsvitError

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "WeightsError", "WeightsMismatchError"]


class WeightsError(RsvitError):
    """Base class of all weights errors."""


class CheckpointFormatError(WeightsError, ValueError):
    """The file is not a checkpoint we can read: empty, truncated, another file type, unknown wrapping."""


class UnsafeCheckpointError(WeightsError):
    """Refusal of a file that could run code or claims memory it does not store.

    It asks the unpickler to call something outside the allow-list (possible code execution), or holds
    a tensor that claims more memory than the file stores for it (a memory bomb).

    Deliberately not a ``pickle.UnpicklingError``: ``torch.load`` re-wraps those, and this refusal
    must reach the caller unchanged.
    """


class WeightsMismatchError(WeightsError, ValueError):
    """The checkpoint does not fit the model: missing, unexpected or differently shaped entries."""
