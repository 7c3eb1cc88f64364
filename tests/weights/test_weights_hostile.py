"""Hostile or damaged checkpoints: memory bombs built from tensor views, refusals that name the file,
and weights of another architecture reported in a few lines instead of a dump."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from rsvit.errors import RsvitError
from rsvit.weights import (
    UnsafeCheckpointError,
    WeightsMismatchError,
    convert_file,
    load,
    load_into,
    read_checkpoint,
    run_convert,
)
from rsvit.weights.tensor_layout import REPEATED_VIEW_BUDGET, iter_tensors, repeated_bytes

TIB = 1 << 40


class _SystemCall:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


class _ForeignConfig:
    """A class only this test module defines: the restricted reader has to stand in for it."""

    def __init__(self) -> None:
        self.depth = 3


def _bomb(claimed: int = TIB) -> torch.Tensor:
    return torch.zeros(1).expand(claimed)  # one stored float, claimed ``claimed`` times


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_stride_zero_tensor_claiming_terabytes_is_refused(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "bomb.pth"
    torch.save({"w": _bomb()}, path, _use_new_zipfile_serialization=not legacy)
    assert path.stat().st_size < 4096
    with pytest.raises(UnsafeCheckpointError, match=r"zero stride") as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "'w'" not in message and "tensor w " in message
    assert "4.0 TiB" in message and "4 B" in message
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path)


def test_overlapping_strides_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overlap.pth"
    n = 1 << 15  # a 256 KiB storage read as a 4 GiB matrix whose rows overlap
    torch.save({"w": torch.zeros(2 * n).as_strided((n, n), (1, 1))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"overlapping strides \[1, 1\]"):
        load(path)


def test_bomb_behind_the_restricted_reader_is_refused(tmp_path: Path) -> None:
    # A foreign class makes weights_only refuse the file, so the restricted reader restores it.
    path = tmp_path / "bomb-with-config.pth"
    torch.save({"model": {"w": _bomb()}, "config": _ForeignConfig()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"model\.w claims \[1099511627776\]") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("claimed", [TIB, 1 << 31], ids=["4TiB", "2GiB-of-bytes"])
def test_convert_refuses_the_bomb_and_writes_nothing(tmp_path: Path, capsys, claimed: int) -> None:
    src, dst = tmp_path / "bomb.pth", tmp_path / "out.safetensors"
    bomb = torch.zeros(1, dtype=torch.uint8).expand(claimed) if claimed < TIB else _bomb(claimed)
    torch.save({"w": bomb}, src)
    with pytest.raises(UnsafeCheckpointError):
        convert_file(src, dst)
    args = argparse.Namespace(
        src=str(src), dst=str(dst), family=None, prefix=None, key=None, architecture=None,
        input_size=None, mean=None, std=None, band_names=None, classes=None,
    )  # fmt: skip
    assert run_convert(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src) in err and "zero stride" in err
    assert list(tmp_path.iterdir()) == [src]


def test_ordinary_views_are_accepted(tmp_path: Path) -> None:
    qkv = torch.arange(36.0).reshape(12, 3)
    q, k, v = qkv.chunk(3)  # views sharing one storage, as a split attention projection saves them
    weights = {
        "q": q,
        "k": k,
        "v": v,
        "t": torch.arange(6.0).reshape(2, 3).t(),  # transposed
        "s": torch.arange(10.0)[::3],  # strided slice
        "b": torch.ones(1, 4).expand(1, 4),  # stride 0 on a size-1 dimension only
        "e": torch.zeros(0, 5),
        "i": torch.tensor(3),
    }
    path = tmp_path / "views.pth"
    torch.save(weights, path)
    loaded = load(path).state_dict
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name


def test_repeated_bytes_checks_every_dimension() -> None:
    base = torch.zeros(64)
    assert repeated_bytes(base.as_strided((4, 4), (4, 1))) == 0
    assert repeated_bytes(base.as_strided((4, 4), (1, 4))) == 0  # column-major
    assert repeated_bytes(base.as_strided((4, 4), (8, 2))) == 0  # gaps are fine
    assert repeated_bytes(base.as_strided((4, 1), (1, 0))) == 0  # zero stride on a size-1 dimension
    assert repeated_bytes(base.as_strided((4, 4), (3, 1))) == 64  # rows overlap
    assert repeated_bytes(base.as_strided((2, 2, 2), (1, 2, 1))) == 32
    assert repeated_bytes(base.as_strided((4, 4), (0, 1))) == 64


def test_broadcast_views_within_the_budget_are_read(tmp_path: Path) -> None:
    # torch.save writes expanded tensors as views; small-file fixtures of whole models rely on it.
    path = tmp_path / "broadcast.pth"
    torch.save({"pos": torch.zeros(()).expand(300, 1000), "w": torch.ones(1, 8).expand(5, 8)}, path)
    loaded = load(path).state_dict
    assert torch.equal(loaded["pos"], torch.zeros(300, 1000)) and torch.equal(loaded["w"], torch.ones(5, 8))


def test_many_views_together_over_the_budget_are_refused(tmp_path: Path) -> None:
    part = REPEATED_VIEW_BUDGET // 4  # each view alone is within the budget, five together are not
    path = tmp_path / "many.pth"
    torch.save({f"w{i}": torch.zeros((), dtype=torch.uint8).expand(part) for i in range(5)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"tensor w\d .*with the other repeating views 1\.2 GiB"):
        load(path)


def test_iter_tensors_visits_shared_containers_once() -> None:
    inner: list = [torch.zeros(1)]
    nested = inner
    for _ in range(40):  # 2**40 paths through the same lists, 41 lists
        nested = [nested, nested]
    found = list(iter_tensors({"a": nested}))
    assert len(found) == 1 and re.fullmatch(r"a(\[[01]\]){40}\[0\]", found[0][0])


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_unsafe_refusals_name_the_file(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": _SystemCall()}, path,
               _use_new_zipfile_serialization=not legacy)  # fmt: skip
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path))) as info:
        read_checkpoint(path)
    assert "system" in str(info.value)
    assert isinstance(info.value, RsvitError)


def test_weights_of_another_architecture_stop_with_a_short_report(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({f"blocks.{i}.attn.qkv.weight": torch.zeros(6, 2) for i in range(500)}, path)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(50)])
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(WeightsMismatchError) as info:
        load_into(model, path)
    message = str(info.value)
    assert str(path) in message and "fits none of the 100 entries of Sequential" in message
    assert "500 unexpected" in message and "100 missing" in message
    assert len(message) < 1000 and message.count("blocks.") <= 3
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    with pytest.raises(WeightsMismatchError, match="fits none"):
        load_into(model, path, strict=False)


def test_partial_load_is_still_possible_and_prints_briefly(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    torch.save({"0.weight": torch.ones(3, 4), "0.bias": torch.ones(3), "junk": torch.zeros(10_000)}, path)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    report = load_into(model, path)  # non-strict: what fits is copied
    assert torch.equal(model[0].weight, torch.ones(3, 4))
    assert report.missing_keys == ["1.weight", "1.bias"] and report.unexpected_keys == ["junk"]
    for text in (str(report), repr(report), f"{report}"):
        assert len(text.splitlines()) == 1 and len(text) < 300 and "tensor(" not in text
    with pytest.raises(WeightsMismatchError, match="2 missing"):
        load_into(model, path, strict=True)
