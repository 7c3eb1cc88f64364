"""An interrupted fit resumed from its last checkpoint ends with the same weights as an uninterrupted one.

The run uses the full RSP augmentation (RandAugment, random erasing, Mixup/CutMix) so that the shuffles
and every random draw of the data pipeline have to continue exactly, not only the optimiser.
"""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from test_classification_lightning import make_tree, write_config

from rsvit.cli.lightning import build_cli


class Crash(Callback):
    """Simulates a machine failure after a given number of optimiser steps."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at_step:
            raise RuntimeError("simulated crash")


def _cli(config, runs):
    return build_cli(["--config", str(config), f"--trainer.logger.init_args.save_dir={runs}"], run=False)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    data = make_tree(tmp_path / "data", per_class=6)
    config = write_config(
        tmp_path / "config.yaml",
        data,
        tmp_path / "runs",
        trainer__max_epochs=3,
        model__mixup_alpha=0.8,
        model__cutmix_alpha=1.0,
        model__lr_scale_batch=512,
        model__warmup_epochs=1,
        data__re_prob=0.5,
    )
    # 9 training images, batch 4, whole batches only: 2 steps per epoch, 6 in all.
    reference = _cli(config, tmp_path / "a")
    reference.trainer.fit(reference.model, datamodule=reference.datamodule)
    assert reference.trainer.global_step == 6
    expected = _weights(reference.model)

    crashed = _cli(config, tmp_path / "b")
    crashed.trainer.callbacks.append(Crash(at_step=3))  # inside the second epoch
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.trainer.fit(crashed.model, datamodule=crashed.datamodule)
    run = tmp_path / "b" / "synthetic" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # end of the first epoch

    resumed = _cli(config, tmp_path / "b")
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path=str(last))
    assert resumed.trainer.global_step == 6
    got = _weights(resumed.model)
    assert got.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
    # The report continues too: one history entry per epoch.
    history = json.loads((tmp_path / "b" / "synthetic" / "version_1" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
