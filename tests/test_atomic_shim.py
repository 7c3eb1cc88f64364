"""Atomic writes moved to ``rsvit.utils.atomic``; the old module still gives the names, with a warning."""

from __future__ import annotations

import pytest


def test_old_atomic_module_warns_and_gives_the_same_functions(tmp_path) -> None:
    import rsvit.atomic as old
    from rsvit.utils import atomic

    with pytest.warns(DeprecationWarning, match=r"rsvit\.utils\.atomic\.atomic_write_text"):
        write = old.atomic_write_text
    assert write is atomic.atomic_write_text
    write(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x"
    with pytest.raises(AttributeError, match="nothing_here"):
        _ = old.nothing_here
