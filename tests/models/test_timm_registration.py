"""``import rsvit`` stays light, and timm knows rsvit's backbones whichever of the two is imported first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rsvit.utils.post_import import when_imported


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_rsvit_loads_neither_torch_nor_timm() -> None:
    assert _run("import sys, rsvit; print(sorted({'torch', 'timm'} & set(sys.modules)))") == "[]"


_FEATURES = (
    "import torch; m = timm.create_model('vitaev2_s', features_only=True).eval(); "
    "maps = m(torch.zeros(1, 3, 64, 64)); "
    "print([tuple(f.shape) for f in maps], m.feature_info.channels(), m.feature_info.reduction())"
)
_EXPECTED = (
    "[(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)] [64, 128, 256, 512] [4, 8, 16, 32]"
)


@pytest.mark.parametrize("imports", ["import rsvit; import timm", "import timm; import rsvit"])
def test_timm_creates_vitaev2_after_a_plain_import_rsvit(imports: str) -> None:
    """Registering costs nothing: the model code is imported only when timm creates the model."""
    before = "import sys; print(timm.is_model('vitaev2_s'), 'rsvit.models' in sys.modules); "
    assert _run(f"{imports}; {before}{_FEATURES}").splitlines() == ["True False", _EXPECTED]


def test_when_imported_calls_back_after_the_import_or_at_once(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "rsvit_probe_module.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    when_imported("rsvit_probe_module", lambda module: seen.append(module.VALUE))
    assert seen == []
    import rsvit_probe_module

    assert seen == [7]
    assert type(rsvit_probe_module.__loader__).__name__ == "SourceFileLoader"  # the real loader is back
    when_imported("rsvit_probe_module", lambda module: seen.append(module.VALUE + 1))
    assert seen == [7, 8]
    monkeypatch.delitem(sys.modules, "rsvit_probe_module")
