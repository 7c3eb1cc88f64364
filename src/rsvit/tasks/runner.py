"""What every task's command line shares: building its LightningCLI, running a subcommand, fitting a config.

Each task module (``seg_runner``, ``change_runner``, ``regression_runner``) only declares its LightningCLI
class (task, DataModule, argument links, report callbacks) and calls these.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LIGHTNING_SUBCOMMANDS", "fit_config", "instantiate_cli", "run_cli"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

BuildFn = Callable[..., Any]


def instantiate_cli(cli_class: type, args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
    """Parses ``args`` with ``cli_class``; ``run=False`` only instantiates trainer, model and data."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended")
        return cli_class(args=list(args), run=run, **kwargs)


def run_cli(build: BuildFn, args: list[str], subcommands: Sequence[str]) -> int:
    """Runs ``<subcommand> --config ...`` through ``build(args, run=True)``; returns the exit status."""
    if not args or (args[0] not in subcommands and args[0] not in ("-h", "--help")):
        print(f"expected one of {', '.join(subcommands)} first, got {args[:1]}", file=sys.stderr)
        return 2
    try:
        build(args, run=True)
    except SystemExit as exc:  # jsonargparse exits on --help and on bad arguments
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def fit_config(
    build: BuildFn, config_path: str | Path, overrides: list[str] | None, report_type: type
) -> Path:
    """Fits the run a YAML config describes and returns its run folder, which must hold the exported
    ``model.safetensors`` written by the task's report callback (an instance of ``report_type``)."""
    from rsvit.tasks.callbacks import run_dir

    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    cli = build(["--config", str(config_path), *(overrides or [])], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    folder = run_dir(cli.trainer)
    report = next((cb for cb in cli.trainer.callbacks if isinstance(cb, report_type)), None)
    if report is None or report.exported is None or not report.exported.is_file():
        raise RuntimeError(f"the run in {folder} did not export its model (report.export disabled?)")
    return folder
