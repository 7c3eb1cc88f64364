"""Training output that reads well on a terminal and in a log file.

Lightning's defaults print ``Epoch 0/-2`` for step-limited runs (``max_epochs=-1``), a promotional tip,
a FLOPs column of zeros (no example input) and, when stdout is not a terminal, nothing at all for minutes.
Here: a rich bar that counts steps on a terminal, a line every ``every_s`` seconds otherwise, a model
summary without the empty FLOPs column, and a log filter that drops the tips.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichProgressBar

__all__ = [
    "CompactModelSummary",
    "LineProgress",
    "StepRichProgressBar",
    "drop_promotional_tips",
    "step_description",
    "training_output_callbacks",
]

_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch", "lightning")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


def drop_promotional_tips() -> None:
    """Drops Lightning's advertising lines (``💡 Tip: ... litlogger/litmodels``) from its loggers."""
    for name in _TIP_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in log.filters):
            log.addFilter(_NoTips())


def _total_steps(trainer: L.Trainer) -> int | None:
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # the estimate needs a dataloader; without one there is no total to show
        return None
    return int(total) if total != float("inf") else None


def step_description(trainer: L.Trainer, current_epoch: int) -> str:
    """``Epoch 3/9`` for epoch-limited runs, ``Epoch 3, step 120/600`` for step-limited ones."""
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        return f"Epoch {current_epoch}/{trainer.max_epochs - 1}"
    total = _total_steps(trainer)
    return f"Epoch {current_epoch}, step {trainer.global_step}" + (f"/{total}" if total else "")


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for name, value in metrics.items():
        if name == "v_num":
            continue
        try:
            parts.append(f"{name} {float(value):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{name} {value}")
    return ", ".join(parts)


class LineProgress(ProgressBar):
    """Progress as plain lines, for logs.

    One when training starts, one every ``every_s`` seconds (step,
    share done, seconds per step, time left, the progress-bar metrics), one per validation and one at the
    end.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._start = self._last = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _say(self, text: str) -> None:
        if self._enabled:
            print(text, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        total = _total_steps(trainer)
        self._say(f"training: {total} steps" if total else "training started")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        if now - self._last < self.every_s:
            return
        self._last = now
        step, total = trainer.global_step, _total_steps(trainer)
        per_step = (now - self._start) / max(step, 1)
        line = step_description(trainer, trainer.current_epoch)
        if total:
            left = per_step * (total - step)
            line += f" ({100 * step / total:.0f} %, {per_step:.2f} s/step, {left:.0f} s left)"
        metrics = _format_metrics(self.get_metrics(trainer, pl_module))
        self._say(f"{line}: {metrics}" if metrics else line)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = _format_metrics({k: v for k, v in trainer.callback_metrics.items() if "val" in k})
        self._say(f"validation at step {trainer.global_step}: {metrics}" if metrics else "validation done")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say(f"training done: {trainer.global_step} steps in {time.perf_counter() - self._start:.0f} s")


class CompactModelSummary(ModelSummary):
    """Lightning's model summary without the FLOPs column and total when nothing was counted."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        if not total_flops:
            summary_data = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        if not total_flops:
            table = "\n".join(
                line for line in table.splitlines() if not line.rstrip().endswith("Total Flops")
            )
        logging.getLogger(ModelSummary.__module__).info("\n" + table)


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar, with ``step N/M`` instead of ``Epoch 0/-2`` on step-limited runs."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = step_description(self.trainer, current_epoch)
        return f"{text:{len(self.validation_description)}}"


def _step_rich_bar() -> ProgressBar | None:
    """The step-counting rich bar, or ``None`` when rich is not installed."""
    try:
        return StepRichProgressBar()
    except ModuleNotFoundError:
        return None


def training_output_callbacks(
    existing: list[Any], progress: bool, summary: bool, tty: bool | None = None
) -> list[L.Callback]:
    """The progress and summary callbacks to add to a trainer, unless ``existing`` has its own.

    ``progress``/``summary``: whether the trainer shows them at all (``enable_progress_bar``,
    ``enable_model_summary``). ``tty``: whether stdout is a terminal (default: asked).
    """
    added: list[L.Callback] = []
    if progress and not any(isinstance(c, ProgressBar) for c in existing):
        tty = sys.stdout.isatty() if tty is None else tty
        if tty:
            from lightning.pytorch.callbacks import TQDMProgressBar

            added.append(_step_rich_bar() or TQDMProgressBar())
        else:
            added.append(LineProgress())
    if summary and not any(isinstance(c, ModelSummary) for c in existing):
        added.append(CompactModelSummary())
    return added
