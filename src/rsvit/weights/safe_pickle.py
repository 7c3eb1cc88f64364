"""Reading PyTorch checkpoint files without ever running code they reference.

Official remote-sensing checkpoints are pickles. Some contain objects that
``torch.load(weights_only=True)`` refuses (a yacs ``CfgNode`` config, numpy scalars in mmcv metadata,
whole ``nn.Module`` instances of classes that only exist in the authors' repositories). Loading them
with a full unpickler would import and execute whatever the file names, so this module provides a
restricted reader instead:

* :func:`safe_torch_load` first tries ``torch.load(..., weights_only=True)``. Only when that refuses
  the file does it fall back to the restricted reader.
* The restricted reader is handed to ``torch.load`` as its ``pickle_module``, so torch still does
  the storage and tensor bookkeeping for both the zip and the legacy file formats, but every global
  the pickle names is resolved by :class:`RestrictedUnpickler.find_class`:

  - an explicit allow-list of harmless callables (tensor rebuild functions, ``OrderedDict``, sets,
    ``torch.Size``, dtypes, numpy scalar and array reconstruction with object dtypes rejected, ...),
    each wrapped so the file cannot alter the real function;
  - names from obviously dangerous modules (``os``, ``subprocess``, ``builtins.eval``, ...) are
    refused at once;
  - every other name becomes a fresh *placeholder class*: nothing is imported. A placeholder can be
    instantiated the way pickle restores objects (``NEWOBJ``/``copyreg``) and records its state, but
    *calling* it (``REDUCE``) raises :class:`UnsafeCheckpointError` naming the global.

:func:`module_state_dict` then turns a placeholder tree of a pickled ``nn.Module`` into the flat state
dict ``module.state_dict()`` would have produced.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from rsvit.weights.errors import UnsafeCheckpointError
from rsvit.weights.tensor_layout import (
    REPEATED_VIEW_BUDGET,
    describe_bytes,
    iter_tensors,
    layout_problem,
    repeated_bytes,
    repeated_view_note,
)

__all__ = [
    "PickleLoad",
    "PickledObject",
    "RestrictedUnpickler",
    "is_pickled_module",
    "is_torchscript_archive",
    "module_state_dict",
    "restricted_load",
    "restricted_loads",
    "safe_torch_load",
    "to_plain",
]

# Module roots whose globals are refused outright, even before anything could call them.
_FORBIDDEN_MODULE_ROOTS = frozenset(
    {
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "shutil",
        "socket",
        "importlib",
        "runpy",
        "pty",
        "ctypes",
        "code",
        "codeop",
        "marshal",
        "pickle",
        "_pickle",
        "dill",
        "cloudpickle",
        "webbrowser",
        "multiprocessing",
        "signal",
        "operator",
        "_operator",
    }
)

# Names in ``builtins`` that are plain data types. Every other builtin (eval, exec, getattr,
# __import__, open, compile, ...) is refused.
_SAFE_BUILTIN_TYPES: dict[str, type] = {
    "set": set,
    "frozenset": frozenset,
    "slice": slice,
    "range": range,
    "complex": complex,
    "bytearray": bytearray,
    "bytes": bytes,
    "object": object,
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
}


# ----------------------------------------------------------------------------------------------
# Placeholders for classes outside the allow-list
# ----------------------------------------------------------------------------------------------


class _PlaceholderType(type):
    """Metaclass of placeholders: restoring instances is allowed, calling the class is not.

    Pickle's ``REDUCE`` calls the global with arguments, which for a foreign name could be anything
    (``os.system``, a class with side effects in ``__init__``), so it is refused with the name.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeCheckpointError(
            f"the checkpoint asks to call {cls.pickled_path}{_short_args(args)}, which is not on the "
            "allow-list of the restricted reader; refusing to load it (the file may be malicious)"
        )

    @property
    def pickled_path(cls) -> str:
        return f"{cls.pickled_module}.{cls.pickled_name}"


class PickledObject(metaclass=_PlaceholderType):
    """Inert stand-in for an instance of a class the reader did not import.

    Records what pickle gives it: constructor arguments of ``NEWOBJ`` (``args``), the ``BUILD`` state
    (``state``, for an ``nn.Module`` its ``__dict__``), and items of dict/list subclasses such as yacs'
    ``CfgNode`` (``items`` / ``list_items``). It defines no behaviour beyond that.
    """

    pickled_module: ClassVar[str] = "?"
    pickled_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, list_items=[])
        return obj

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["items"][key] = value

    def append(self, value: Any) -> None:
        self.__dict__["list_items"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["list_items"].extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeCheckpointError(
            f"the checkpoint asks to call an instance of {type(self).pickled_path}; refusing to load it"
        )

    @property
    def attributes(self) -> dict[str, Any]:
        """The restored ``__dict__`` (``BUILD`` state), or an empty dict."""
        state = self.__dict__["state"]
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = state[0]
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<placeholder {type(self).pickled_path}>"


def _short_args(args: tuple[Any, ...]) -> str:
    text = repr(args)
    return f"{text[:80]}..." if len(text) > 80 else text


def _new_placeholder_class(module: str, name: str) -> type[PickledObject]:
    safe_name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "Unnamed"
    return _PlaceholderType(safe_name, (PickledObject,), {"pickled_module": module, "pickled_name": name})


# ----------------------------------------------------------------------------------------------
# Allow-listed callables
# ----------------------------------------------------------------------------------------------


class _AllowedCallable:
    """Wraps an allow-listed function so a ``BUILD`` opcode cannot modify the real function object."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(f"the checkpoint tries to modify the function {self._name}")

    def __repr__(self) -> str:
        return f"<allowed {self._name}>"


class _TypeToken:
    """Stands for a class that pickles may name as an argument but must not call or instantiate.

    ``numpy.ndarray`` is only meaningful as the first argument of ``_reconstruct``, ``torch.Tensor`` and
    ``torch.nn.Parameter`` as the target type of ``_rebuild_from_type_v2``; handing the real classes to
    the file would let it allocate arbitrary amounts of memory through them.
    """

    __slots__ = ("cls",)

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __repr__(self) -> str:
        return f"<type {self.cls.__module__}.{self.cls.__qualname__}>"


_NUMPY_ARRAY_TOKEN = _TypeToken(np.ndarray)
_TENSOR_TOKEN = _TypeToken(torch.Tensor)
_PARAMETER_TOKEN = _TypeToken(torch.nn.Parameter)


def _no_hooks(hooks: Any) -> OrderedDict[Any, Any]:
    # Backward hooks stored with a tensor would be callables from the file: never keep them.
    del hooks
    return OrderedDict()


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any) -> torch.Tensor:
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor:
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, _no_hooks(backward_hooks), metadata
    )


def _rebuild_tensor_v3(
    storage: Any,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool,
    backward_hooks: Any,
    dtype: torch.dtype,
    metadata: Any = None,
) -> torch.Tensor:
    return torch._utils._rebuild_tensor_v3(
        storage, offset, size, stride, requires_grad, _no_hooks(backward_hooks), dtype, metadata
    )


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any) -> torch.nn.Parameter:
    return torch._utils._rebuild_parameter(data, requires_grad, _no_hooks(backward_hooks))


def _rebuild_parameter_with_state(
    data: torch.Tensor, requires_grad: bool, backward_hooks: Any, state: Any
) -> torch.nn.Parameter:
    # Attributes attached to a parameter are not weights; drop them rather than setattr foreign data.
    del state
    return torch._utils._rebuild_parameter(data, requires_grad, _no_hooks(backward_hooks))


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if new_type is not _TENSOR_TOKEN and new_type is not _PARAMETER_TOKEN:
        raise UnsafeCheckpointError(f"the checkpoint restores a tensor as the foreign type {new_type!r}")
    new_type = new_type.cls
    if not isinstance(func, _AllowedCallable):
        raise UnsafeCheckpointError(f"the checkpoint rebuilds a tensor with {func!r}")
    del state
    tensor = func(*args)
    if not isinstance(tensor, torch.Tensor):
        raise UnsafeCheckpointError(f"the tensor rebuild in the checkpoint produced {type(tensor).__name__}")
    return tensor if type(tensor) is new_type else tensor.as_subclass(new_type)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol 2 stores bytes as ``_codecs.encode(str, "latin1")``; no other codec is needed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"the checkpoint calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor(cls, base, state) is how protocols 0/1 restore objects.
    if isinstance(cls, _PlaceholderType):
        obj = cls.__new__(cls)
        if base is dict and isinstance(state, dict):
            obj.items.update(state)
        elif base is list and isinstance(state, list):
            obj.list_items.extend(state)
        return obj
    if cls is base and cls in (object, dict, list, set, tuple) and state is None:
        return cls()
    raise UnsafeCheckpointError(f"the checkpoint uses copyreg._reconstructor on {cls!r}")


def _newobj(cls: Any, *args: Any) -> Any:
    if isinstance(cls, _PlaceholderType):
        return cls.__new__(cls, *args)
    if cls in (OrderedDict, dict, list, set, object):
        return cls.__new__(cls)
    raise UnsafeCheckpointError(f"the checkpoint uses copyreg.__newobj__ on {cls!r}")


def _plain_dict(*args: Any) -> dict[Any, Any]:
    # collections.defaultdict(factory): keep the items, never the (foreign) factory.
    del args
    return {}


def _inert_record(module: str, name: str) -> Callable[..., PickledObject]:
    """Allow-listed constructor of a harmless data class, restored as a placeholder record instead."""
    record_cls = _new_placeholder_class(module, name)

    def make(*args: Any, **kwargs: Any) -> PickledObject:
        return record_cls.__new__(record_cls, *args, **kwargs)

    return make


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafeCheckpointError(f"the checkpoint builds a numpy dtype from {type(spec).__name__}")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"the checkpoint builds a numpy object dtype {spec!r}")
    return dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes | bytearray):
        raise UnsafeCheckpointError("the checkpoint builds a numpy scalar that is not plain data")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NUMPY_ARRAY_TOKEN:
        raise UnsafeCheckpointError(f"the checkpoint reconstructs a numpy array of type {subtype!r}")
    del shape, typecode
    return np.ndarray((0,), dtype=np.uint8)


def _build_allow_list() -> dict[str, Any]:
    allowed: dict[str, Any] = {f"builtins.{name}": tp for name, tp in _SAFE_BUILTIN_TYPES.items()}
    allowed.update(
        {
            "collections.OrderedDict": OrderedDict,
            "torch.Size": torch.Size,
            "torch.device": torch.device,
            "torch.Tensor": _TENSOR_TOKEN,
            "torch.nn.parameter.Parameter": _PARAMETER_TOKEN,
            "numpy.ndarray": _NUMPY_ARRAY_TOKEN,
        }
    )
    functions: dict[str, Callable[..., Any]] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "_codecs.encode": _codecs_encode,
        "copyreg._reconstructor": _reconstructor,
        "copyreg.__newobj__": _newobj,
        "collections.defaultdict": _plain_dict,
        # Stored as records: a partial is never called, a namespace's attributes are plain data.
        "functools.partial": _inert_record("functools", "partial"),
        "types.SimpleNamespace": _inert_record("types", "SimpleNamespace"),
        "argparse.Namespace": _inert_record("argparse", "Namespace"),
        "numpy.dtype": _numpy_dtype,
    }
    for numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        functions[f"{numpy_core}.scalar"] = _numpy_scalar
        functions[f"{numpy_core}._reconstruct"] = _numpy_reconstruct
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype | torch.memory_format | torch.layout):
            allowed[f"torch.{name}"] = value
    return allowed | {name: _AllowedCallable(name, fn) for name, fn in functions.items()}


_ALLOW_LIST: dict[str, Any] | None = None


def _allow_list() -> dict[str, Any]:
    global _ALLOW_LIST
    if _ALLOW_LIST is None:
        _ALLOW_LIST = _build_allow_list()
    return _ALLOW_LIST


# ----------------------------------------------------------------------------------------------
# The unpickler
# ----------------------------------------------------------------------------------------------


@dataclass
class _ReadContext:
    """Per-file state: placeholder classes created so far (one per foreign global)."""

    placeholders: dict[str, type[PickledObject]] = field(default_factory=dict)

    def resolve(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        path = f"{module}.{name}"
        allowed = _allow_list()
        if path in allowed:
            return allowed[path]
        root = module.split(".", 1)[0]
        if root == "builtins" or root in _FORBIDDEN_MODULE_ROOTS or name.startswith("__"):
            raise UnsafeCheckpointError(
                f"the checkpoint references {path}, which is not on the allow-list of the restricted "
                "reader; refusing to load it (the file may be malicious)"
            )
        placeholder = self.placeholders.get(path)
        if placeholder is None:
            placeholder = _new_placeholder_class(module, name)
            self.placeholders[path] = placeholder
        return placeholder


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose global lookup never imports: allow-list, refusal or placeholder."""

    context: _ReadContext

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(file, *args, **kwargs)
        if not hasattr(self, "context"):
            self.context = _ReadContext()

    def find_class(self, module: str, name: str) -> Any:
        return self.context.resolve(module, name)


def _pickle_module_for(context: _ReadContext) -> types.ModuleType:
    """A stand-in ``pickle`` module for ``torch.load(pickle_module=...)`` bound to one read context."""

    class _BoundUnpickler(RestrictedUnpickler):
        pass

    _BoundUnpickler.context = context
    module = types.ModuleType("rsvit_restricted_pickle")
    module.Unpickler = _BoundUnpickler  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]

    def load(file: Any, **kwargs: Any) -> Any:
        return _BoundUnpickler(file, **kwargs).load()

    module.load = load  # type: ignore[attr-defined]
    return module


@dataclass
class PickleLoad:
    """Result of reading a torch file: the object and how it had to be read."""

    obj: Any
    restricted: bool
    foreign_classes: tuple[str, ...] = ()


def _zip_records(path: str) -> list[str] | None:
    """Record names of a torch zip archive as torch's own reader sees them (None: not a zip)."""
    if not zipfile.is_zipfile(path):
        return None
    reader_cls = getattr(torch._C, "PyTorchFileReader", None)
    if reader_cls is not None:
        try:
            return list(reader_cls(path).get_all_records())
        except RuntimeError:
            pass  # unreadable for torch: let torch.load report the corruption
    with zipfile.ZipFile(path) as archive:
        return [name.split("/", 1)[-1] for name in archive.namelist()]


def is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives hold code (``torch.load`` would hand them to ``torch.jit.load``)."""
    records = _zip_records(os.fspath(path))
    return records is not None and any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in records)


def _refuse_memory_bombs(path: str | os.PathLike[str], obj: Any) -> None:
    """Refuses the file when its tensors claim more memory than it stores (see ``tensor_layout``)."""
    name = os.fspath(path)
    repeated = 0
    for where, tensor in iter_tensors(obj):
        problem = layout_problem(tensor)
        if problem is not None:
            raise UnsafeCheckpointError(f"{name}: tensor {where} {problem}; refusing the file (corrupted?)")
        claimed = repeated_bytes(tensor)
        repeated += claimed
        if repeated > REPEATED_VIEW_BUDGET:
            total = (
                f" (with the other repeating views {describe_bytes(repeated)})" if repeated > claimed else ""
            )
            raise UnsafeCheckpointError(
                f"{name}: tensor {where} {repeated_view_note(tensor)}{total}; more than the "
                f"{describe_bytes(REPEATED_VIEW_BUDGET)} rsvit accepts from such views, refusing the file "
                "(copying it would exhaust memory; the file may be malicious)"
            )


def _naming_the_file(path: str | os.PathLike[str], exc: UnsafeCheckpointError) -> UnsafeCheckpointError:
    """The refusal with the file's name in front (the unpickler itself does not know the file)."""
    name = os.fspath(path)
    return exc if str(exc).startswith(name) else UnsafeCheckpointError(f"{name}: {exc}")


def restricted_load(path: str | os.PathLike[str]) -> PickleLoad:
    """Read a torch checkpoint (zip or legacy format) with the restricted unpickler only."""
    if is_torchscript_archive(path):
        raise UnsafeCheckpointError(
            f"{os.fspath(path)} is a TorchScript archive, i.e. a program; rsvit only reads weights. "
            "Save its state_dict() instead."
        )
    context = _ReadContext()
    try:
        with warnings.catch_warnings():
            # Legacy whole-module files make torch compare stored class sources; placeholders have none.
            warnings.simplefilter("ignore")
            obj = torch.load(
                os.fspath(path),
                map_location="cpu",
                weights_only=False,
                pickle_module=_pickle_module_for(context),
            )
    except UnsafeCheckpointError as exc:
        raise _naming_the_file(path, exc) from exc
    _refuse_memory_bombs(path, obj)
    return PickleLoad(obj=obj, restricted=True, foreign_classes=tuple(sorted(context.placeholders)))


def restricted_loads(data: bytes) -> Any:
    """Unpickle plain pickle bytes with the restricted rules (no torch storages)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def safe_torch_load(path: str | os.PathLike[str]) -> PickleLoad:
    """``torch.load(weights_only=True)`` first; the restricted reader only for files it refuses.

    Raises :class:`UnsafeCheckpointError` (naming the file) when it calls anything outside the allow-list
    or holds a tensor claiming more memory than it stores (checked before anything is copied); other
    failures (truncation, corruption) propagate as the original exception for the caller to classify.
    """
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return restricted_load(path)
    _refuse_memory_bombs(path, obj)
    return PickleLoad(obj=obj, restricted=False)


# ----------------------------------------------------------------------------------------------
# Turning placeholders into data
# ----------------------------------------------------------------------------------------------


def is_pickled_module(obj: Any) -> bool:
    """Whether ``obj`` is a placeholder restored from a pickled ``nn.Module``."""
    if not isinstance(obj, PickledObject):
        return False
    attributes = obj.attributes
    return isinstance(attributes.get("_parameters"), dict) and isinstance(attributes.get("_modules"), dict)


def _iter_module_tensors(
    obj: PickledObject, prefix: str, ancestors: frozenset[int]
) -> Iterator[tuple[str, Any]]:
    # A submodule shared by two parents appears under both names, as in state_dict(); a module that
    # contains itself (only a crafted file can) would recurse forever, so it is refused.
    if id(obj) in ancestors:
        raise TypeError(f"pickled module {prefix or '<root>'} contains itself")
    ancestors = ancestors | {id(obj)}
    attributes = obj.attributes
    for name, param in attributes.get("_parameters", {}).items():
        if param is not None:
            yield prefix + name, param
    non_persistent = attributes.get("_non_persistent_buffers_set") or set()
    for name, buf in attributes.get("_buffers", {}).items():
        if buf is not None and name not in non_persistent:
            yield prefix + name, buf
    for name, child in attributes.get("_modules", {}).items():
        if child is None:
            continue
        if not is_pickled_module(child):
            raise TypeError(f"submodule {prefix + name!r} is a {type(child).__name__}, not a pickled module")
        yield from _iter_module_tensors(child, f"{prefix}{name}.", ancestors)


def module_state_dict(obj: PickledObject) -> dict[str, torch.Tensor]:
    """Flat state dict of a pickled module, with the names ``module.state_dict()`` would use.

    Parameters, then persistent buffers, then children, recursively (the order of ``state_dict``;
    a shared submodule is listed under each of its names); ``None`` entries and buffers listed in
    ``_non_persistent_buffers_set`` are skipped.
    """
    if not is_pickled_module(obj):
        raise TypeError(f"{obj!r} is not a pickled nn.Module")
    out: dict[str, torch.Tensor] = {}
    for key, value in _iter_module_tensors(obj, "", frozenset()):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"entry {key!r} of the pickled module is a {type(value).__name__}, not a tensor")
        out[key] = value.detach()
    return out


def to_plain(obj: Any, depth: int = 0) -> Any:
    """JSON-friendly copy of restored metadata (configs, mmcv ``meta``); tensors are summarised."""
    if depth > 20:
        return "..."
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return f"<tensor {tuple(obj.shape)} {obj.dtype}>"
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_plain(v, depth + 1) for v in obj]
    if isinstance(obj, PickledObject):
        if obj.items:
            return {str(k): to_plain(v, depth + 1) for k, v in obj.items.items()}
        if obj.list_items:
            return [to_plain(v, depth + 1) for v in obj.list_items]
        if is_pickled_module(obj):
            return f"<module {type(obj).pickled_path}>"
        if obj.attributes:
            return {str(k): to_plain(v, depth + 1) for k, v in obj.attributes.items()}
        return f"<{type(obj).pickled_path}>"
    return str(obj)
