"""The same command scales out with Lightning DDP: 2 CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from test_classification_lightning import make_tree, write_config

DUMP_CALLBACK = '''
import torch
from lightning.pytorch.callbacks import Callback


class DumpWeights(Callback):
    """Each process saves its weights and its learning rate when fitting ends."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module):
        group = trainer.optimizers[0].param_groups[0]
        torch.save(
            {"state_dict": pl_module.state_dict(), "world_size": trainer.world_size,
             "initial_lr": group["initial_lr"], "steps": trainer.global_step},
            f"{self.out_dir}/rank{trainer.global_rank}.pt",
        )
'''


def test_ddp_two_cpu_processes_end_identical(tmp_path):
    data = make_tree(tmp_path / "data", per_class=8)
    (tmp_path / "ddp_dump.py").write_text(textwrap.dedent(DUMP_CALLBACK))
    config = write_config(
        tmp_path / "config.yaml",
        data,
        tmp_path / "runs",
        trainer__max_epochs=2,
        trainer__devices=2,
        trainer__strategy="ddp",
        trainer__callbacks=[
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
            {"class_path": "ddp_dump.DumpWeights", "init_args": {"out_dir": str(tmp_path)}},
        ],
        model__lr_scale_batch=512,
        model__mixup_alpha=0.8,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rsvit", "fit", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world_size"] == rank1["world_size"] == 2
    # 12 training images split over 2 processes, batch 4: 1 step per epoch (whole batches only).
    assert rank0["steps"] == rank1["steps"] == 2
    # RSP scaling counts every process: 0.01 * 4 per process * 2 processes / 512.
    assert rank0["initial_lr"] == rank1["initial_lr"]
    assert abs(rank0["initial_lr"] - 0.01 * 4 * 2 / 512) < 1e-12
    different = [k for k, v in rank0["state_dict"].items() if not torch.equal(v, rank1["state_dict"][k])]
    assert not different, f"ranks differ in {different[:5]}"
    # The checkpoint the main process wrote holds those weights, and reports were written once.
    run = tmp_path / "runs" / "synthetic" / "version_0"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in rank1["state_dict"].items())
    assert (run / "metrics.json").is_file() and (run / "confusion_val.png").is_file()
