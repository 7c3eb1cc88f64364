"""Safe reading, key conversion and export of model weights.

Official remote-sensing checkpoints come as pickles in several wrappings; everything here reads them
without executing code from the file (``torch.load(weights_only=True)`` or a restricted unpickler),
converts their keys to our model layouts and writes safetensors files with metadata.

>>> from rsvit.weights import load_into, save, WeightsMetadata       # doctest: +SKIP
>>> report = load_into(model, "rsp-resnet-50-ckpt.pth")              # doctest: +SKIP

Names are imported on first use, so that declaring ``rsvit convert``'s arguments loads no torch.
"""

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "LoadResult": "rsvit.weights.api",
    "WeightsMetadata": "rsvit.weights.api",
    "convert_file": "rsvit.weights.api",
    "load": "rsvit.weights.api",
    "load_into": "rsvit.weights.api",
    "load_starting_weights": "rsvit.weights.api",
    "read_metadata": "rsvit.weights.api",
    "run_convert": "rsvit.weights.api",
    "save": "rsvit.weights.api",
    "add_convert_arguments": "rsvit.weights.convert_args",
    "CONVERTER_PROVIDERS": "rsvit.weights.convert",
    "available_families": "rsvit.weights.convert",
    "convert_state_dict": "rsvit.weights.convert",
    "guess_family": "rsvit.weights.convert",
    "infer_family": "rsvit.weights.convert",
    "register_converter": "rsvit.weights.convert",
    "split_prefix": "rsvit.weights.convert",
    "CheckpointFormatError": "rsvit.weights.errors",
    "UnsafeCheckpointError": "rsvit.weights.errors",
    "WeightsError": "rsvit.weights.errors",
    "WeightsMismatchError": "rsvit.weights.errors",
    "Checkpoint": "rsvit.weights.formats",
    "read_checkpoint": "rsvit.weights.formats",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
