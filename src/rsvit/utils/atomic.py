"""Atomic file output: write beside the target, rename into place, never leave half a file.

Every file rsvit writes goes through here, so an interrupted run leaves either the old file or the new
one under the final name, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "commit_temp",
    "reserve_temp",
    "save_figure",
]


def reserve_temp(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Creates an empty hidden temporary file in the target's folder and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def commit_temp(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Renames a finished temporary file onto ``path`` with ordinary permissions (mkstemp gives 0600)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renamed onto it on success, removed on any error.

    ``suffix`` matters to writers that pick a format from the name (e.g. ``.png``).
    """
    tmp = reserve_temp(path, suffix)
    try:
        yield tmp
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` so readers see the old file or the whole new one, never a partial one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` as UTF-8, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Saves a matplotlib figure atomically (format from the target's suffix)."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    return path
