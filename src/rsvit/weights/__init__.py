"""Safe reading, key conversion and export of model weights.

Official remote-sensing checkpoints come as pickles in several wrappings; everything here reads them
without executing code from the file (``torch.load(weights_only=True)`` or a restricted unpickler),
converts their keys to our model layouts and writes safetensors files with metadata.

>>> from rsvit.weights import load_into, save, WeightsMetadata       # doctest: +SKIP
>>> report = load_into(model, "rsp-resnet-50-ckpt.pth")              # doctest: +SKIP
"""

from rsvit.weights.api import (
    LoadResult,
    WeightsMetadata,
    add_convert_arguments,
    convert_file,
    load,
    load_into,
    load_starting_weights,
    read_metadata,
    run_convert,
    save,
)
from rsvit.weights.convert import (
    CONVERTER_PROVIDERS,
    available_families,
    convert_state_dict,
    guess_family,
    infer_family,
    register_converter,
    split_prefix,
)
from rsvit.weights.errors import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    WeightsError,
    WeightsMismatchError,
)
from rsvit.weights.formats import Checkpoint, read_checkpoint

__all__ = [
    "CONVERTER_PROVIDERS",
    "Checkpoint",
    "CheckpointFormatError",
    "LoadResult",
    "UnsafeCheckpointError",
    "WeightsError",
    "WeightsMetadata",
    "WeightsMismatchError",
    "add_convert_arguments",
    "available_families",
    "convert_file",
    "convert_state_dict",
    "guess_family",
    "infer_family",
    "load",
    "load_into",
    "load_starting_weights",
    "read_checkpoint",
    "read_metadata",
    "register_converter",
    "run_convert",
    "save",
    "split_prefix",
]
