"""Which teacher and student ``rsvit benchmark --teacher/--student/--config`` times, checked to be comparable.

Model files, or the teacher file and the student spec of a distillation config (the student then has
random weights; its speed does not depend on them). The timing itself is :mod:`rsvit.benchmark`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from rsvit.models.spec import ModelSpec

__all__ = [
    "PAIR_FAMILIES",
    "Contender",
    "read_distillation_config",
    "teacher_and_student",
]

PAIR_FAMILIES = ("classification", "segmentation", "change")  # the families a distillation task trains


@dataclass
class Contender:
    """One side of a teacher/student comparison: the network, its spec and where it came from."""

    role: str
    model: nn.Module
    spec: ModelSpec
    source: str

    def describe(self) -> str:
        count = sum(p.numel() for p in self.model.parameters())
        spec = self.spec
        name = f"{spec.task} {spec.backbone}/{spec.head}"
        return f"{self.role}: {name}, {count / 1e6:.2f} M parameters ({self.source})"


def read_distillation_config(path: str | os.PathLike[str]) -> tuple[str | None, ModelSpec]:
    """The teacher file and the student spec a distillation config names (``model.init_args``)."""
    from rsvit.cli.config_check import read_config
    from rsvit.cli.lightning import task_class_of
    from rsvit.models.spec import task_spec
    from rsvit.tasks.distillation import DistillationTask

    config = read_config(path)
    task = task_class_of(["--config", os.fspath(path)])
    if not issubclass(task, DistillationTask):
        raise ValueError(
            f"{path} trains a {task.__name__}, not a distillation task; give --teacher and --student "
            "model files, or a config from configs/distillation/"
        )
    section = config.get("model") or {}
    init = section.get("init_args") or {}
    spec = task_spec(init.get("model"), task.family, task.default_backbone, task.__name__)
    teacher = init.get("teacher")
    return (str(teacher) if teacher else None), spec


def _load(role: str, path: str) -> Contender:
    from rsvit.models.spec import load_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"{role} model file not found: {path} (give --{role} FILE)")
    model, spec, _ = load_model(path)
    return Contender(role, model, spec, path)


def teacher_and_student(args: argparse.Namespace) -> tuple[Contender, Contender]:
    """The two networks ``--teacher``, ``--student`` and ``--config`` name, checked to be comparable.

    A file given on the command line wins over the config; a student taken from a config's spec is
    built with random weights (its speed does not depend on them).
    """
    from rsvit.models.spec import build_model

    teacher_file, student_spec = args.teacher, None
    if args.config:
        configured, student_spec = read_distillation_config(args.config)
        teacher_file = teacher_file or configured
    if not teacher_file:
        raise ValueError(
            "no teacher: give --teacher FILE (a model file rsvit wrote), or a --config naming one"
        )
    if not (args.student or student_spec):
        raise ValueError("no student: give --student FILE, or --config with a distillation config")
    teacher = _load("teacher", teacher_file)
    if args.student:
        student = _load("student", args.student)
    else:
        student = Contender("student", build_model(student_spec), student_spec, f"spec of {args.config}")
    if teacher.spec.task not in PAIR_FAMILIES:
        raise ValueError(
            f"{teacher_file} is a {teacher.spec.task} model; teacher/student timing covers "
            f"{', '.join(PAIR_FAMILIES)}"
        )
    for name in ("task", "in_chans"):
        if getattr(teacher.spec, name) != getattr(student.spec, name):
            raise ValueError(
                f"the teacher has {name}={getattr(teacher.spec, name)!r}, the student "
                f"{getattr(student.spec, name)!r}: a student is timed on the inputs of its teacher"
            )
    return teacher, student
