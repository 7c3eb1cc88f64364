"""The ``rsvit`` command: one entry point with a subcommand per job.

Subcommands import their dependencies lazily so that ``rsvit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from rsvit.models.catalogue import backbone_table, format_table

    print(format_table(backbone_table()))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    sub.add_parser("models", help="list the configured backbones with parameter counts")
    return _cmd_models


def _add_convert(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.weights import add_convert_arguments, run_convert

    parser = sub.add_parser(
        "convert",
        help="convert an official checkpoint to rsvit safetensors",
        description="Read any supported checkpoint safely, convert its keys to rsvit's layout and write "
        "a safetensors file with metadata (written atomically).",
    )
    add_convert_arguments(parser)
    return run_convert


def _add_demo(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    from rsvit.demo import add_demo_arguments, run_demo

    parser = sub.add_parser(
        "demo",
        help="quick start: list backbones and run one on a sample image",
        description="Lists the backbones, runs one on a real multispectral sample (or your image) and "
        "writes a picture of its feature pyramid.",
    )
    add_demo_arguments(parser)
    return run_demo


_SUBCOMMANDS = [_add_models, _add_demo, _add_convert]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rsvit",
        description="Remote Sensing Vision Transformers: backbones, tasks, large-scene inference.",
    )
    from rsvit import __version__

    parser.add_argument("--version", action="version", version=f"rsvit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for add in _SUBCOMMANDS:
        handler = add(sub)
        handlers[list(sub.choices)[-1]] = handler
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(handlers[args.command](args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"rsvit {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
