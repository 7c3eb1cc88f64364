"""``rsvit fit|validate|test|predict``: one LightningCLI for whichever task class the config names.

A config names its task and data classes explicitly::

    model:
      class_path: rsvit.tasks.SegmentationTask
      init_args: {model: {backbone: resnet18, head: upernet}, ...}
    data:
      class_path: rsvit.datamodules.SegmentationDataModule
      init_args: {root: ..., ...}

Each task class says how it plugs in (:meth:`rsvit.tasks.base.BaseTask.command_line`): the DataModule it
trains on, which data values are linked into which task arguments (``num_classes``, ``classes``,
``palette``, ``in_chans`` ...) and its always-on ``report`` and ``prediction_writer`` callbacks. There is
no table of tasks here: a new family is a new task class with its ``command_line``.

Why two steps. jsonargparse links in subclass mode need their target to exist for every class the
option may take, and the families link different arguments and add different callbacks, so one parser
over all tasks cannot hold them. So the class is read first: ``model.class_path`` from the ``--config``
files and the ``--model.class_path=...`` / ``--model=...`` overrides, taken in order (the last wins, as in
jsonargparse). A full jsonargparse parse cannot do this first step, since it rejects the keys only the
task's own parser declares (``report``, ``prediction_writer``). Then the LightningCLI of that class is
built in subclass mode with the class itself as the base, so the link targets
``model.init_args.<argument>`` exist for every allowed class, and it parses the same arguments for real
(checking, among the rest, that the class path is the one it was built for). A caller that already knows
the class (``task=``) skips the first step; its config may then give the task's arguments directly,
without ``class_path``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsvit.cli.config_check import read_config

__all__ = [
    "LIGHTNING_COMMANDS",
    "build_cli",
    "check_configs",
    "entry_points",
    "named_class_path",
    "run_lightning",
    "task_class_of",
    "train_from_config",
]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
_HELP = ("-h", "--help")


def _quiet(cli_class: type, args: Sequence[str], **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended")
        return cli_class(args=list(args), **kwargs)


def _option_values(args: Sequence[str], name: str) -> list[tuple[str, str]]:
    """``(option, value)`` of every ``--name...`` option (``--name V`` or ``--name=V``), in order."""
    found = []
    for i, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        if option == name or option.startswith(name + "."):
            if not eq:
                if i + 1 >= len(args):
                    continue
                value = args[i + 1]
            found.append((option, value))
    return found


def _load_yaml(text_or_path: str) -> Any:
    import yaml

    path = Path(text_or_path)
    if path.is_file():
        return read_config(path)
    if text_or_path.endswith((".yaml", ".yml", ".json")):
        raise FileNotFoundError(f"config not found: {text_or_path}")
    return yaml.safe_load(text_or_path)


def check_configs(args: Sequence[str]) -> None:
    """Reads every ``--config`` file in ``args`` so that a malformed one is reported with file and line."""
    for option, value in _option_values(args, "--config") + _option_values(args, "-c"):
        if option in ("--config", "-c"):
            read_config(value)


def named_class_path(args: Sequence[str]) -> str | None:
    """``model.class_path`` as the config files and overrides in ``args`` set it (the last wins)."""
    class_path = None
    for option, value in _option_values(args, "--config") + _option_values(args, "-c"):
        if option not in ("--config", "-c"):
            continue
        config = _load_yaml(value)
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict) and model.get("class_path"):
            class_path = str(model["class_path"])
        elif isinstance(model, str):
            class_path = model
    for option, value in _option_values(args, "--model"):
        if option == "--model.class_path":
            class_path = value
        elif option == "--model":
            loaded = _load_yaml(value)  # a config file, a YAML mapping or a class path
            if isinstance(loaded, dict):
                class_path = str(loaded["class_path"]) if loaded.get("class_path") else class_path
            elif loaded:
                class_path = str(loaded)
    return class_path


def task_class_of(args: Sequence[str]) -> type:
    """The task class a ``[fit|validate|test|predict] --config ...`` call names (``model.class_path``).

    A bare class name (``SegmentationTask``) is looked up in :mod:`rsvit.tasks`.
    """
    from importlib import import_module

    class_path = named_class_path(args)
    if not class_path:
        raise ValueError(
            "the config does not name its task: give model: {class_path: rsvit.tasks.SegmentationTask, "
            "init_args: {...}} (or ClassificationTask, ChangeDetectionTask, DenseRegressionTask, ...)"
        )
    module, _, name = class_path.rpartition(".")
    try:
        task = getattr(import_module(module or "rsvit.tasks"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"model.class_path {class_path!r} cannot be imported: {err}") from err
    if not (isinstance(task, type) and callable(getattr(task, "command_line", None))):
        raise ValueError(
            f"{class_path} is not an rsvit task (a subclass of rsvit.tasks.base.BaseTask with command_line())"
        )
    return task


def _generic_help(args: Sequence[str]) -> None:
    """``rsvit fit --help`` without a config: the options of any task (``--model CLASS_PATH`` ...)."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    class AnyTaskCLI(LightningCLI):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(
                L.LightningModule,
                L.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=None,
                **kwargs,
            )

    _quiet(AnyTaskCLI, args)


def _task_cli(task: type) -> type:
    from lightning.pytorch.cli import LightningCLI

    setup = task.command_line()

    class TaskCLI(LightningCLI):
        """LightningCLI of one task class: its DataModule, links and always-on callbacks."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(
                task, setup.datamodule, subclass_mode_model=True, subclass_mode_data=True, **kwargs
            )

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            # Readable training output (rsvit.tasks.progress) unless the config brings its own.
            from rsvit.tasks.progress import drop_promotional_tips, training_output_callbacks

            drop_promotional_tips()
            given = config.get("callbacks") or []
            given = given if isinstance(given, list) else [given]
            callbacks = callbacks + training_output_callbacks(
                [*given, *callbacks],
                progress=config.get("enable_progress_bar") is not False,
                summary=config.get("enable_model_summary") is not False,
            )
            return super()._instantiate_trainer(config, callbacks)

        def add_arguments_to_parser(self, parser: Any) -> None:
            for link in setup.links:
                if link.on_instantiate:
                    parser.link_arguments(
                        f"data.{link.source}", f"model.init_args.{link.target}", apply_on="instantiate"
                    )
                else:
                    parser.link_arguments(f"data.init_args.{link.source}", f"model.init_args.{link.target}")
            for key, callback in setup.callbacks.items():
                parser.add_lightning_class_args(callback, key)

    TaskCLI.__name__ = TaskCLI.__qualname__ = f"{task.__name__}CLI"
    return TaskCLI


def build_cli(args: Sequence[str], run: bool = True, task: type | None = None, **kwargs: Any) -> Any:
    """Parses ``args`` with the LightningCLI of ``task`` (default: the class the config names).

    ``run=False`` only builds trainer, model and data (no subcommand in ``args``).
    """
    if task is None:
        task = task_class_of(args)
    return _quiet(_task_cli(task), args, run=run, **kwargs)


def run_lightning(args: Sequence[str], task: type | None = None) -> int:
    """Runs ``<fit|validate|test|predict> --config ...``; returns the exit status."""
    args = list(args)
    if not args or args[0] not in LIGHTNING_COMMANDS + _HELP:
        print(f"expected one of {', '.join(LIGHTNING_COMMANDS)} first, got {args[:1]}", file=sys.stderr)
        return 2
    check_configs(args)
    try:
        if task is None and named_class_path(args) is None and any(a in _HELP for a in args):
            _generic_help(args)
        build_cli(args, run=True, task=task)
    except SystemExit as exc:  # jsonargparse exits on --help and on bad arguments
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def train_from_config(
    config_path: str | Path, overrides: Sequence[str] | None = None, task: type | None = None
) -> Path:
    """Fits the run a YAML config describes and returns its run folder.

    ``overrides`` are further LightningCLI arguments (``["--trainer.max_steps=20"]``). The folder holds
    ``config.yaml``, ``metrics.json``, the report's figures and ``model.safetensors`` (load it with
    :func:`rsvit.models.load_model`).
    """
    from rsvit.tasks.reports import run_dir

    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    args = ["--config", str(config_path), *(overrides or [])]
    check_configs(args)
    if task is None:
        task = task_class_of(args)
    cli = build_cli(args, run=False, task=task)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    folder = run_dir(cli.trainer)
    report_type = task.command_line().callbacks.get("report")
    report = next((cb for cb in cli.trainer.callbacks if report_type and isinstance(cb, report_type)), None)
    exported = getattr(report, "exported", None)
    if exported is None or not exported.is_file():
        raise RuntimeError(f"the run in {folder} did not export its model (report.export disabled?)")
    return folder


def entry_points(task_path: str) -> tuple[Any, Any, Any, Any]:
    """``(build, run, train_from_config, main)`` bound to one task class (``"module:Class"``).

    What the deprecated per-task runner modules re-export: each delegates to this command line with the
    task fixed, so their configs need no ``class_path``.
    """
    from importlib import import_module

    def task() -> type:
        module, _, name = task_path.partition(":")
        return getattr(import_module(module), name)

    def build(args: Sequence[str], run: bool = True, **kwargs: Any) -> Any:
        return build_cli(args, run=run, task=task(), **kwargs)

    def run(args: list[str]) -> int:
        return run_lightning(args, task=task())

    def train(config_path: str | Path, overrides: list[str] | None = None) -> Path:
        return train_from_config(config_path, overrides, task=task())

    def main(argv: Sequence[str] | None = None) -> int:
        return run(list(sys.argv[1:] if argv is None else argv))

    return build, run, train, main
