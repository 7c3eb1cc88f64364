"""``python -m rsvit.weights IN OUT``: the same conversion as ``rsvit convert``."""

from __future__ import annotations

import argparse
import sys

from rsvit.weights.api import add_convert_arguments, run_convert


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rsvit.weights``: converts a checkpoint; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m rsvit.weights", description="Convert a checkpoint to rsvit safetensors."
    )
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
