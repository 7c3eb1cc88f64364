"""Arguments of ``rsvit benchmark``, declared without importing torch (runner: :mod:`rsvit.benchmark`)."""

from __future__ import annotations

import argparse

__all__ = ["JOBS", "add_benchmark_arguments"]

JOBS = ("fwd fp32", "fwd bf16", "train fp32", "train bf16")


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the ``rsvit benchmark`` options on ``parser``, without importing torch."""
    parser.add_argument(
        "--models",
        nargs="+",
        default=["vitaev2_s", "swin_t", "resnet50"],
        help="backbones as `rsvit models` lists them, or any timm model name (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline", default=None, help="model the ratios are taken against (default: the first model)"
    )
    pair = parser.add_argument_group(
        "teacher and student",
        "time a distillation teacher against its student in the same rounds (instead of --models): "
        "img/s as median (slowest-fastest round) and the student/teacher speed ratio",
    )
    pair.add_argument(
        "--teacher", default=None, metavar="FILE", help="teacher model file (model.safetensors)"
    )
    pair.add_argument("--student", default=None, metavar="FILE", help="student model file")
    pair.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="a distillation config: its teacher file and its student spec (random weights); "
        "--teacher/--student override them",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all models")
    parser.add_argument("--iters", type=int, default=3, help="timed forward passes per job and round")
    parser.add_argument(
        "--jobs", nargs="+", default=list(JOBS), choices=JOBS, metavar="JOB", help=f"subset of {list(JOBS)}"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="do not flush denormal floats to zero (flushed by default, as CPU inference runtimes do; "
        "tiny activations of randomly initialised networks otherwise slow bf16 kernels down)",
    )
