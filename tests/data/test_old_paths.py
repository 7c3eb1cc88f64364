"""Module paths from before the one-folder-per-family layout still import, warn, and give the same objects."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pytest

import rsvit
from rsvit import metrics
from rsvit.data import _moved
from rsvit.data import segmentation as segmentation_package

OLD_MODULES = {**_moved.MOVED_MODULES, **metrics.MOVED_MODULES}


def _fresh_import(name: str):
    """Imports ``name`` anew, from this frame (as an ``import`` statement would, so warnings point here)."""
    sys.modules.pop(name, None)
    __import__(name)
    return sys.modules[name]


@pytest.mark.parametrize(("old", "new"), sorted(OLD_MODULES.items()))
def test_old_module_path_warns_and_is_the_new_module(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")) as caught:
        module = _fresh_import(old)
    target = importlib.import_module(new)
    assert module is target
    # The warning names the line that imported the old path, not the import machinery.
    assert {Path(w.filename).name for w in caught if issubclass(w.category, DeprecationWarning)} == {
        Path(__file__).name
    }
    public = getattr(target, "__all__", None)
    assert public, f"{new} declares no __all__"
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(f"from {old} import {', '.join(public)}", namespace)  # the spelling old code uses
    for name in public:
        assert namespace[name] is getattr(target, name), f"{old}.{name}"


def test_unknown_names_under_data_still_fail() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rsvit.data.no_such_module")


@pytest.mark.parametrize(("name", "new"), sorted(segmentation_package.MOVED_NAMES.items()))
def test_names_moved_out_of_the_segmentation_module_warn(name: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{new}.{name}".replace(".", r"\.")):
        value = getattr(segmentation_package, name)
    assert value is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("family", ["classification", "segmentation", "change", "regression", "detection"])
def test_family_packages_re_export_their_modules_names_without_warning(family: str) -> None:
    package = importlib.import_module(f"rsvit.data.{family}")
    assert package.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in package.__all__:
            module = importlib.import_module(package._EXPORTS[name])
            assert getattr(package, name) is getattr(module, name)
            assert name in module.__all__
    # ... and nothing public of a family module is missing from the package.
    submodules = [f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)]
    assert set(package._EXPORTS.values()) <= set(submodules)
    for module_name in submodules:
        module = importlib.import_module(module_name)
        assert set(module.__all__) <= set(package.__all__), module_name


def _old_paths_imported(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in OLD_MODULES:
                found.append(f"{path.name}:{node.lineno} {node.module}")
            elif node.module == "rsvit.data.segmentation":
                found += [
                    f"{path.name}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name in segmentation_package.MOVED_NAMES
                ]
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name in OLD_MODULES]
    return found


def test_data_metrics_and_viz_import_only_new_paths() -> None:
    root = Path(rsvit.__file__).parent
    files = [p for package in ("data", "metrics", "viz") for p in (root / package).rglob("*.py")]
    assert len(files) > 10
    offenders = [hit for path in files for hit in _old_paths_imported(path)]
    assert offenders == []
