"""Checks that tensors restored from a checkpoint claim no more memory than the file can justify.

A pickled tensor is a view: storage, offset, size and stride. ``torch.save`` of an expanded tensor
writes one stored value with a zero stride, and nothing stops a crafted file from pairing four stored
bytes with a size of terabytes. Such a view costs nothing until someone copies it (``contiguous``,
``clone``, ``save``), and then it asks for all of it. So views that repeat stored elements (zero or
overlapping strides) are counted, and a file whose repeated views claim more than
:data:`REPEATED_VIEW_BUDGET` in all is refused before anything is copied; views that reach outside
their storage are refused outright.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = [
    "REPEATED_VIEW_BUDGET",
    "describe_bytes",
    "iter_tensors",
    "layout_problem",
    "repeated_bytes",
    "repeated_view_note",
]

#: Bytes that the repeated views of one file may claim in all. Far above what expanded buffers in
#: real checkpoints need (small-file test fixtures of whole models built from broadcast zeros stay
#: below 0.5 GiB), far below what would exhaust memory or disk when the views are copied.
REPEATED_VIEW_BUDGET = 1 << 30


def describe_bytes(n: int) -> str:
    """``n`` bytes, readably (``4 B``, ``2.0 GiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _dims(tensor: torch.Tensor) -> list[tuple[int, int]]:
    return [(size, stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if size > 1]


def _summary(tensor: torch.Tensor) -> str:
    claimed = tensor.numel() * tensor.element_size()
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} ({describe_bytes(claimed)})"


def layout_problem(tensor: torch.Tensor) -> str | None:
    """Why the tensor's view cannot be a view of its storage at all (``None`` when it can)."""
    if tensor.layout != torch.strided or tensor.numel() == 0:
        return None
    dims = _dims(tensor)
    if any(stride < 0 for _, stride in dims) or tensor.storage_offset() < 0:
        return f"claims {_summary(tensor)} with a negative stride or offset"
    extent = tensor.storage_offset() + sum((size - 1) * stride for size, stride in dims) + 1
    stored = tensor.untyped_storage().nbytes()
    if extent * tensor.element_size() > stored:
        return f"claims {_summary(tensor)} reaching past the {describe_bytes(stored)} stored for it"
    return None


def repeated_bytes(tensor: torch.Tensor) -> int:
    """The bytes a view claims when it repeats stored elements (zero or overlapping strides), else 0.

    An ordinary view (contiguous, transposed, sliced, a chunk of a shared storage) maps every element
    to its own stored element, so copying it never needs more than the file stores.
    """
    if tensor.layout != torch.strided or tensor.numel() == 0:
        return 0
    claimed = tensor.numel() * tensor.element_size()
    reach = 1  # elements spanned by the dimensions of smaller stride seen so far
    for size, stride in sorted(_dims(tensor), key=lambda d: d[1]):
        if stride < reach:
            return claimed
        reach += (size - 1) * stride
    return 0


def repeated_view_note(tensor: torch.Tensor) -> str:
    """How a repeating view claims its size, for error messages."""
    stored = describe_bytes(tensor.untyped_storage().nbytes())
    if any(stride == 0 for _, stride in _dims(tensor)):
        return f"claims {_summary(tensor)} by repeating stored values (a zero stride); {stored} stored"
    return f"claims {_summary(tensor)} through overlapping strides {list(tensor.stride())}; {stored} stored"


def iter_tensors(obj: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside plain containers and restored placeholder objects, with where it was found.

    Each container is visited once, so shared or cyclic references in a crafted file cost nothing extra.
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield where or "<top>", item
            continue
        if id(item) in seen:
            continue
        if isinstance(item, Mapping):
            seen.add(id(item))
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, list | tuple | set | frozenset):
            seen.add(id(item))
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        elif hasattr(type(item), "pickled_path") and isinstance(getattr(item, "__dict__", None), dict):
            seen.add(id(item))  # a placeholder of the restricted reader: its recorded state
            stack.extend((where, v) for v in item.__dict__.values())
