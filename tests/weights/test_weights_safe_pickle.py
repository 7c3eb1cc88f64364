"""The restricted reader: refuses anything callable outside its allow-list, never imports foreign code,
and still restores configs and whole pickled modules as inert data."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rsvit.weights import UnsafeCheckpointError, read_checkpoint
from rsvit.weights.safe_pickle import (
    PickledObject,
    is_pickled_module,
    module_state_dict,
    restricted_load,
    restricted_loads,
    safe_torch_load,
    to_plain,
)


def _marker(tmp_path: Path, name: str) -> Path:
    marker = tmp_path / f"pwned-{name}-{os.getpid()}"
    assert not marker.exists()
    return marker


class _SystemCall:
    """Pickles to ``os.system(<command>)``: the classic malicious checkpoint payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _EvalCall:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (self.code,))


class _PopenCall:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self) -> tuple[object, tuple[list[str]]]:
        return (subprocess.Popen, (self.argv,))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_os_system_in_torch_checkpoint_is_refused(tmp_path: Path, legacy: bool) -> None:
    marker = _marker(tmp_path, "system")
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(2)}, "meta": _SystemCall(f"touch {marker}")}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)

    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        safe_torch_load(path)
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        restricted_load(path)  # also when the weights_only attempt is skipped
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_eval_and_popen_in_raw_pickle_are_refused(tmp_path: Path) -> None:
    marker = _marker(tmp_path, "eval")
    code = f"open({str(marker)!r}, 'w').close()"
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        restricted_loads(pickle.dumps({"x": _EvalCall(code)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"subprocess\.Popen"):
        restricted_loads(pickle.dumps(_PopenCall(["touch", str(marker)]), protocol=4))

    raw = tmp_path / "evil.pkl"  # a plain pickle file handed to the checkpoint reader
    raw.write_bytes(pickle.dumps(_EvalCall(code), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        read_checkpoint(raw)
    assert not marker.exists()


def test_calling_an_unlisted_global_is_refused_even_if_harmless_looking(tmp_path: Path) -> None:
    # GLOBAL somepkg.tools.run + REDUCE: the name is not blocked, but calling it is.
    data = b"\x80\x02csomepkg.tools\nrun\nq\x00X\x03\x00\x00\x00argq\x01\x85q\x02Rq\x03."
    with pytest.raises(UnsafeCheckpointError, match=r"somepkg\.tools\.run"):
        restricted_loads(data)
    assert "somepkg" not in sys.modules


def test_allowed_functions_cannot_be_modified_by_build() -> None:
    # GLOBAL collections.defaultdict (allowed) then BUILD with a state dict: must be refused.
    data = b"\x80\x02ccollections\ndefaultdict\nq\x00}q\x01X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(UnsafeCheckpointError, match="modify"):
        restricted_loads(data)


def test_foreign_modules_are_never_imported(tmp_path: Path) -> None:
    """A class from an importable module whose import has a side effect stays a placeholder."""
    marker = _marker(tmp_path, "import")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "sidefx_mod_rsvit.py").write_text(
        textwrap.dedent(
            f"""
            open({str(marker)!r}, "w").close()

            class Config(dict):
                pass
            """
        )
    )
    path = tmp_path / "cfg.pth"
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(package)!r})
        import sidefx_mod_rsvit
        cfg = sidefx_mod_rsvit.Config(lr=0.1)
        torch.save({{"model": {{"w": torch.ones(3)}}, "config": cfg}}, {str(path)!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    marker.unlink()  # created by the saving process

    sys.path.insert(0, str(package))
    try:
        loaded = safe_torch_load(path)
    finally:
        sys.path.remove(str(package))
    assert "sidefx_mod_rsvit" not in sys.modules
    assert not marker.exists()
    assert loaded.restricted
    assert loaded.foreign_classes == ("sidefx_mod_rsvit.Config",)
    config = loaded.obj["config"]
    assert isinstance(config, PickledObject)
    assert to_plain(config) == {"lr": 0.1}
    torch.testing.assert_close(loaded.obj["model"]["w"], torch.ones(3))


def test_weights_only_files_do_not_use_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    torch.save(OrderedDict(w=torch.arange(4.0)), path)
    loaded = safe_torch_load(path)
    assert not loaded.restricted
    torch.testing.assert_close(loaded.obj["w"], torch.arange(4.0))


def test_fake_yacs_config_is_restored_without_yacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yacs = types.ModuleType("yacs")
    yacs_config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__ = "yacs.config"
    CfgNode.__qualname__ = "CfgNode"
    yacs_config.CfgNode = CfgNode  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    config = CfgNode(MODEL=CfgNode(TYPE="swin", NUM_CLASSES=51), DATA=CfgNode(IMG_SIZE=224, MEAN=(0.5, 0.5)))
    path = tmp_path / "rsp.pth"
    torch.save({"model": {"w": torch.ones(2)}, "config": config, "epoch": 99, "max_accuracy": 98.5}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")

    with pytest.raises(pickle.UnpicklingError):  # what a plain weights_only load does
        torch.load(path, weights_only=True)
    loaded = safe_torch_load(path)
    assert "yacs.config" not in sys.modules
    assert to_plain(loaded.obj["config"]) == {
        "MODEL": {"TYPE": "swin", "NUM_CLASSES": 51},
        "DATA": {"IMG_SIZE": 224, "MEAN": [0.5, 0.5]},
    }


def test_numpy_values_in_metadata_are_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "mm.pth"
    meta = {"best_score": np.float64(0.75), "seed": np.int64(3), "hist": np.arange(4, dtype=np.float32)}
    torch.save({"meta": meta, "state_dict": {"w": torch.zeros(1)}}, path)
    loaded = safe_torch_load(path)
    assert loaded.restricted
    assert to_plain(loaded.obj["meta"]) == {"best_score": 0.75, "seed": 3, "hist": [0.0, 1.0, 2.0, 3.0]}
    object_array = pickle.dumps(np.array([None, 1], dtype=object), protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="object dtype"):
        restricted_loads(object_array)


_FAKE_NETWORK_SCRIPT = """
import sys, types, torch
from torch import nn

models = types.ModuleType("models")
networks = types.ModuleType("models.networks")
sys.modules["models"] = models
sys.modules["models.networks"] = networks

class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("scratch", torch.ones(1), persistent=False)
        self.register_parameter("unused", None)
        self.act = nn.functional.gelu  # a function stored as attribute

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = Cell()
        self.backbone = nn.Sequential(shared, Cell())
        self.alias = shared  # the same submodule under two names, as state_dict() lists it
        self.head = nn.Linear(4, 2)
        self.empty = None
        self.args = types.SimpleNamespace(mode="rsp_100")

for cls in (Cell, Net):
    cls.__module__ = "models.networks"
    setattr(networks, cls.__name__, cls)

torch.manual_seed(0)
net = Net()
torch.save(net, sys.argv[1], _use_new_zipfile_serialization=sys.argv[2] == "zip")
torch.save(net.state_dict(), sys.argv[3])
"""


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_whole_pickled_module_becomes_its_state_dict(tmp_path: Path, container: str) -> None:
    module_file, reference_file = tmp_path / "net.pth", tmp_path / "reference.pth"
    subprocess.run(
        [sys.executable, "-c", _FAKE_NETWORK_SCRIPT, str(module_file), container, str(reference_file)],
        check=True,
    )
    reference = torch.load(reference_file, weights_only=True)

    loaded = safe_torch_load(module_file)
    assert "models.networks" not in sys.modules
    assert "models.networks.Net" in loaded.foreign_classes
    assert is_pickled_module(loaded.obj)
    state_dict = module_state_dict(loaded.obj)
    assert list(state_dict) == list(reference)  # names and order of module.state_dict()
    for key, tensor in reference.items():
        torch.testing.assert_close(state_dict[key], tensor)

    checkpoint = read_checkpoint(module_file)
    assert checkpoint.format == "pickled-module"
    assert checkpoint.metadata["module_class"] == "models.networks.Net"
    assert list(checkpoint.state_dict) == list(reference)


def test_placeholder_modules_cannot_run() -> None:
    net = nn.Linear(2, 2)
    loaded = restricted_loads(pickle.dumps({"w": 1, "cls": type(net)}, protocol=2))
    placeholder_class = loaded["cls"]
    assert placeholder_class.pickled_path == "torch.nn.modules.linear.Linear"
    with pytest.raises(UnsafeCheckpointError, match="Linear"):
        placeholder_class(2, 2)


def test_tensor_variants_through_the_restricted_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("fake_trainer_rsvit")

    class Options:
        pass

    Options.__module__, Options.__qualname__ = "fake_trainer_rsvit", "Options"
    fake.Options = Options  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_trainer_rsvit", fake)
    tagged = torch.arange(6.0).reshape(2, 3)
    tagged.note = "tensor with Python attributes"  # pickled through _rebuild_from_type_v2
    param = nn.Parameter(torch.ones(3))
    param.extra = 1  # pickled through _rebuild_parameter_with_state
    half = torch.full((2,), 0.5, dtype=torch.float16)
    path = tmp_path / "variants.pth"
    torch.save({"opts": Options(), "tagged": tagged, "param": param, "half": half, "view": tagged[1]}, path)
    monkeypatch.delitem(sys.modules, "fake_trainer_rsvit")

    loaded = safe_torch_load(path)
    assert loaded.restricted
    obj = loaded.obj
    assert type(obj["tagged"]) is torch.Tensor and not hasattr(obj["tagged"], "note")
    torch.testing.assert_close(obj["tagged"], torch.arange(6.0).reshape(2, 3))
    assert isinstance(obj["param"], nn.Parameter) and not hasattr(obj["param"], "extra")
    assert obj["half"].dtype == torch.float16
    torch.testing.assert_close(obj["view"], torch.tensor([3.0, 4.0, 5.0]))
