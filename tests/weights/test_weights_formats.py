"""Recognition of the official checkpoint wrappings (synthetic files shaped from the key manifests)
and clear errors for files that are not checkpoints."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from manifests import manifest_rows, zero_views
from rsvit.weights import CheckpointFormatError, read_checkpoint
from rsvit.weights.formats import sniff_file_kind


def assert_same_layout(state_dict: dict[str, torch.Tensor], rows: list) -> None:
    assert list(state_dict) == [key for key, _, _ in rows]
    for key, shape, dtype in rows:
        assert tuple(state_dict[key].shape) == shape, key
        assert state_dict[key].dtype == dtype, key


def save_rsp_classification(
    state_dict: dict[str, torch.Tensor], path: Path, model_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An RSP scene-recognition checkpoint, saved while a stand-in yacs exists and read after it is gone."""
    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs_config.CfgNode = CfgNode  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "yacs", yacs)
        patch.setitem(sys.modules, "yacs.config", yacs_config)
        config = CfgNode(MODEL=CfgNode(TYPE=model_type, NUM_CLASSES=51), DATA=CfgNode(IMG_SIZE=224))
        optimizer = {"state": {}, "param_groups": []}
        torch.save(
            {
                "model": state_dict,
                "optimizer": optimizer,
                "lr_scheduler": {},
                "max_accuracy": 97.5,
                "epoch": 99,
            }
            | {"config": config},
            path,
        )
    assert "yacs.config" not in sys.modules


@pytest.mark.parametrize(
    ("manifest_name", "model_type"),
    [
        ("vitaev2_s_cls51", "ViTAE_Window_NoShift_basic"),
        ("rsp_resnet50_cls51", "resnet"),
        ("rsp_swin_t_cls51", "swin"),
    ],
)
def test_rsp_classification_checkpoint(
    reference_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest_name: str, model_type: str
) -> None:
    rows = manifest_rows(reference_dir, manifest_name)
    path = tmp_path / "rsp.pth"
    save_rsp_classification(zero_views(rows), path, model_type, monkeypatch)

    checkpoint = read_checkpoint(path)
    assert "yacs" not in sys.modules
    assert checkpoint.format == "rsp-classification"
    assert_same_layout(checkpoint.state_dict, rows)
    assert json.loads(checkpoint.metadata["config"])["MODEL"] == {"TYPE": model_type, "NUM_CLASSES": 51}
    assert json.loads(checkpoint.metadata["pickled_classes"]) == ["yacs.config.CfgNode"]
    assert checkpoint.metadata["reader"] == "restricted"


def test_mmseg_checkpoint(reference_dir: Path, tmp_path: Path) -> None:
    rows = manifest_rows(reference_dir, "vitaev2_s_upernet_potsdam")
    classes = ("impervious_surface", "building", "low_vegetation", "tree", "car")
    meta = {
        "mmcv_version": "1.4.0",
        "CLASSES": classes,
        "PALETTE": [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]],
        "hook_msgs": {"best_score": np.float64(0.81)},
        "iter": 80000,
    }
    path = tmp_path / "potsdam.pth"
    torch.save({"meta": meta, "state_dict": zero_views(rows), "optimizer": {}}, path)

    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "mmseg"
    assert_same_layout(checkpoint.state_dict, rows)
    assert json.loads(checkpoint.metadata["classes"]) == list(classes)
    assert json.loads(checkpoint.metadata["iter"]) == 80000
    assert {k.split(".", 1)[0] for k in checkpoint.state_dict} == {
        "backbone",
        "decode_head",
        "auxiliary_head",
    }


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "model-key"])
def test_dpt_checkpoint(reference_dir: Path, tmp_path: Path, wrapped: bool) -> None:
    rows = manifest_rows(reference_dir, "dpt_hybrid_midas")
    path = tmp_path / "dpt.pt"
    state_dict = zero_views(rows)
    torch.save({"model": state_dict, "optimizer": {}} if wrapped else state_dict, path)

    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "dpt"
    assert checkpoint.metadata["reader"] == "weights_only"  # no foreign objects: no fallback needed
    assert_same_layout(checkpoint.state_dict, rows)


@pytest.mark.parametrize("data_parallel", [False, True], ids=["single-gpu", "module-prefix"])
def test_bit_checkpoint(reference_dir: Path, tmp_path: Path, data_parallel: bool) -> None:
    rows = manifest_rows(reference_dir, "bit_base_transformer_pos_s4_dd8_dedim8")
    state_dict = zero_views(rows)
    if data_parallel:
        state_dict = OrderedDict((f"module.{k}", v) for k, v in state_dict.items())
    path = tmp_path / "best_ckpt.pt"
    torch.save(
        {
            "epoch_id": 180,
            "best_val_acc": 0.93,
            "best_epoch_id": 171,
            "model_G_state_dict": state_dict,
            "optimizer_G_state_dict": {},
            "exp_lr_scheduler_G_state_dict": {},
        },
        path,
    )
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "bit"
    assert_same_layout(checkpoint.state_dict, rows)
    assert json.loads(checkpoint.metadata["best_epoch_id"]) == 171


def test_timm_training_checkpoint_prefers_state_dict_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "imp.pth.tar"
    torch.save(
        {
            "arch": "vitae",
            "epoch": 300,
            "state_dict": {"w": torch.zeros(2)},
            "state_dict_ema": {"w": torch.ones(2)},
        },
        path,
    )
    assert read_checkpoint(path).format == "timm-train"
    torch.testing.assert_close(read_checkpoint(path).state_dict["w"], torch.zeros(2))
    torch.testing.assert_close(read_checkpoint(path, key="state_dict_ema").state_dict["w"], torch.ones(2))
    with pytest.raises(CheckpointFormatError, match="no entry 'ema'"):
        read_checkpoint(path, key="ema")


_CD_SAVE_SCRIPT = """
import json, sys, types, torch
from torch import nn

models = types.ModuleType("models"); networks = types.ModuleType("models.networks")
sys.modules["models"] = models; sys.modules["models.networks"] = networks

class Node(nn.Module):
    pass

class BASE_Transformer(nn.Module):
    pass

for cls in (Node, BASE_Transformer):
    cls.__module__ = "models.networks"
    setattr(networks, cls.__name__, cls)

root = BASE_Transformer()
base = torch.zeros(1)
for line in open(sys.argv[1]).read().splitlines():
    key, shape, dtype = line.split("\\t")
    *path, leaf = key.split(".")
    module = root
    for name in path:
        if name not in module._modules:
            module.add_module(name, Node())
        module = module._modules[name]
    tensor = torch.zeros((), dtype=getattr(torch, dtype)).expand(json.loads(shape))
    buffer = leaf.startswith("running_") or leaf in ("relative_position_index", "attn_mask")
    if dtype == "float32" and not buffer:
        module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=True))
    else:
        module.register_buffer(leaf, tensor)
torch.save(root, sys.argv[2])
"""


def test_rsp_change_detection_pickled_module(reference_dir: Path, tmp_path: Path) -> None:
    rows = manifest_rows(reference_dir, "vitaev2_s_bit_cd")
    path = tmp_path / "cd_model.pth"
    subprocess.run(
        [
            sys.executable,
            "-c",
            _CD_SAVE_SCRIPT,
            str(reference_dir / "keys" / "vitaev2_s_bit_cd.tsv"),
            str(path),
        ],
        check=True,
    )
    checkpoint = read_checkpoint(path)
    assert "models.networks" not in sys.modules
    assert checkpoint.format == "pickled-module"
    assert checkpoint.metadata["module_class"] == "models.networks.BASE_Transformer"
    assert set(checkpoint.state_dict) == {key for key, _, _ in rows}
    for key, shape, dtype in rows:
        assert tuple(checkpoint.state_dict[key].shape) == shape and checkpoint.state_dict[key].dtype == dtype
    assert not any(t.requires_grad for t in checkpoint.state_dict.values())


def test_safetensors_with_metadata(reference_dir: Path) -> None:
    checkpoint = read_checkpoint(reference_dir / "fixtures" / "rsp_swin_tiny_cfg.safetensors")
    assert checkpoint.format == "safetensors"
    assert json.loads(checkpoint.metadata["config"])["embed_dim"] == 32
    assert "layers.0.downsample.reduction.weight" in checkpoint.state_dict


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_torch_file(tmp_path: Path, legacy: bool) -> None:
    whole = tmp_path / "whole.pth"
    torch.save(
        {"state_dict": {"w": torch.randn(64, 64), "b": torch.randn(64)}},
        whole,
        _use_new_zipfile_serialization=not legacy,
    )
    data = whole.read_bytes()
    half = tmp_path / "half.pth"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match=r"half\.pth.*(truncated|damaged)"):
        read_checkpoint(half)


def test_truncated_safetensors(tmp_path: Path) -> None:
    whole = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(128, 128)}, whole)
    half = tmp_path / "half.safetensors"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match=r"half\.safetensors.*truncated or corrupted"):
        read_checkpoint(half)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(200), "a JPEG image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "a PNG image"),
        (b"model:\n  name: vitaev2_s\n  classes: 51\n", "a text file"),
        (bytes(range(7, 250)), "not a checkpoint"),
    ],
    ids=["empty", "jpeg", "png", "text", "binary"],
)
def test_non_checkpoint_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert "expected a PyTorch checkpoint" in str(info.value)


def test_other_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        read_checkpoint(archive)

    plain_pickle = tmp_path / "list.pkl"
    plain_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointFormatError, match="magic number"):
        read_checkpoint(plain_pickle)

    no_tensors = tmp_path / "hyper.pth"
    torch.save({"lr": 0.1, "epochs": 3}, no_tensors)
    with pytest.raises(
        CheckpointFormatError, match=r"keys \['epochs', 'lr'\], none of which is a state dict"
    ):
        read_checkpoint(no_tensors)

    with pytest.raises(CheckpointFormatError, match="is a directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
def test_torchscript_archives_are_not_run(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    assert sniff_file_kind(path) == "zip"
    with pytest.raises(CheckpointFormatError, match="TorchScript"):
        read_checkpoint(path)


def test_sniffing_distinguishes_containers(tmp_path: Path) -> None:
    zip_file, legacy, tensors = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.safetensors"
    torch.save({"w": torch.ones(1)}, zip_file)
    torch.save({"w": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    save_file({"w": torch.ones(1)}, tensors)
    assert [sniff_file_kind(p) for p in (zip_file, legacy, tensors)] == ["zip", "pickle", "safetensors"]
