"""The export criterion itself: differences beyond 1e-4 of the output range fail, class agreement counts."""

from __future__ import annotations

import pytest
import torch

from rsvit.export import argmax_agreement, compare


def test_difference_is_judged_relative_to_the_range():
    ref = torch.linspace(-50.0, 50.0, 1000).view(1, 10, 10, 10)
    assert compare(ref, ref + 0.009).ok  # 9e-5 of a range of 100
    result = compare(ref, ref + 0.02)
    assert not result.ok and result.relative == pytest.approx(2e-4, rel=1e-3)
    assert "TOO FAR" in str(result)
    with pytest.raises(ValueError, match="shapes differ"):
        compare(ref, ref[:, :5])


def test_argmax_agreement_counts_pixels():
    ref = torch.zeros(1, 3, 2, 2)
    ref[:, 0] = 1.0
    other = ref.clone()
    other[0, 2, 0, 0] = 5.0
    assert argmax_agreement(ref, other) == 0.75
    with pytest.raises(ValueError, match="class scores"):
        argmax_agreement(torch.zeros(4), torch.zeros(4))
