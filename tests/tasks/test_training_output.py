"""Training output on terminals and in logs: steps instead of ``Epoch 0/-2``, lines when not a terminal,
no FLOPs column of zeros, no promotional tips."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from rsvit.cli import main
from rsvit.demo import demo_config_path
from rsvit.tasks.progress import (
    CompactModelSummary,
    LineProgress,
    StepRichProgressBar,
    drop_promotional_tips,
    step_description,
    training_output_callbacks,
)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, callbacks: list, **kwargs) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=callbacks, **kwargs
    )
    trainer.fit(_Tiny(), data)
    return trainer


def test_line_progress_reports_steps_and_time_left(tmp_path: Path, capsys) -> None:
    trainer = _fit(tmp_path, [LineProgress(every_s=0)], max_steps=3, enable_model_summary=False)
    out = capsys.readouterr().out
    assert "training: 3 steps" in out
    assert "step 3/3 (100 %" in out and "s left)" in out and "loss " in out
    assert "/-2" not in out and "training done: 3 steps" in out
    assert step_description(trainer, 0) == "Epoch 0, step 3/3"


def test_terminal_bar_counts_steps(tmp_path: Path) -> None:
    (bar,) = training_output_callbacks([], progress=True, summary=False, tty=True)
    assert isinstance(bar, StepRichProgressBar)
    pickle.dumps(bar)  # ddp_spawn pickles the callbacks
    _fit(tmp_path, [bar], max_steps=3, enable_model_summary=False)
    text = bar._get_train_description(0)
    assert "step 3/3" in text and "/-2" not in text


def test_epoch_limited_runs_keep_the_epoch_count(tmp_path: Path) -> None:
    trainer = _fit(tmp_path, [LineProgress(every_s=1e9)], max_epochs=2, enable_model_summary=False)
    assert step_description(trainer, 1) == "Epoch 1/1"


def test_summary_drops_the_empty_flops_column(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, [LineProgress(every_s=1e9), CompactModelSummary()], max_steps=1)
    assert "Total params" in caplog.text and "FLOPs" not in caplog.text and "Flops" not in caplog.text


def test_callbacks_follow_the_terminal_and_the_trainer_flags() -> None:
    (line, summary) = training_output_callbacks([], progress=True, summary=True, tty=False)
    assert isinstance(line, LineProgress) and isinstance(summary, CompactModelSummary)
    assert training_output_callbacks([LineProgress()], progress=True, summary=False) == []
    assert training_output_callbacks([], progress=False, summary=False) == []


def test_promotional_tips_are_dropped(caplog) -> None:
    drop_promotional_tips()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info("💡 Tip: For seamless cloud logging, try installing something")
        log.info("GPU available: False")
    assert "GPU available" in caplog.text and "Tip" not in caplog.text


def test_fit_command_output_in_a_log(tmp_path: Path, capfd, caplog) -> None:
    """``rsvit fit`` with stdout not a terminal: progress lines, no tip, no FLOPs, no ``/-2``."""
    args = [
        "fit",
        "--config",
        str(demo_config_path()),
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--data.crop_size=64",
        "--data.train_repeats=1",
        "--data.batch_size=2",
        "--model.model.head_kwargs.channels=16",
        "--model.model.head_kwargs.aux_channels=16",
        "--model.num_plots=0",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "Total params" in text  # the summary is there, only its empty FLOPs went
    assert "training: 2 steps" in text and "training done: 2 steps" in text
    assert "validation at step 2" in text
    assert "Tip:" not in text and "FLOPs" not in text and "Total Flops" not in text and "/-2" not in text
