"""Reading checkpoint files without running code from them: the one loader of every checkpoint MDQE reads.

A pickle can name any Python callable and have the unpickler call it, so a checkpoint from a stranger
(a Google Drive or Baidu link, a model-zoo mirror) could run any command the moment it is loaded. Loading a
checkpoint here never runs code from it:

- `.pkl` files (detectron2 / Detectron model zoo: {"model": {name: ndarray}, "__author__": ...} or Caffe2
  {"blobs": ...}) have the lengths their opcodes state checked against the file, then go through a
  restricted unpickler that rebuilds only dicts, lists, tuples, sets, strings, bytes, numbers and numpy
  arrays / scalars of numeric dtypes. The numpy parts are rebuilt by this module's own code from
  validated values (no numpy object is touched by the pickle itself), and any other global the file
  names is refused with `UnsafeCheckpointError` naming the file and the global.
- every other file (`.pth`, `.pt`, `.pyth`, ...) goes through `torch.load(..., weights_only=True)`,
  PyTorch's restricted unpickler (tensors, containers, numbers, strings, optimizer and scheduler state);
  the global it refuses is named the same way. A zip-format file whose members declare more bytes than
  the file holds (torch writes them uncompressed) is refused before it is inflated; a file of the legacy
  format (before PyTorch 1.6) is unpickled from memory, where no stated length allocates more than the
  file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import re
import zipfile
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "UnreadableCheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "load_pickle_weights",
    "load_torch_weights",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, corrupted, unsafe or not fitting the model."""


class UnreadableCheckpointError(CheckpointError):
    """The file is truncated, not a checkpoint, or does not match its `.sha256`."""


class UnsafeCheckpointError(UnreadableCheckpointError):
    """The file asks the unpickler for something a weights file never needs (a function, a class): it
    may have been made to run code, and it is refused without running anything."""


def _refused(path: str, name: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refusing checkpoint {path}: it asks for the Python global {name}, which a weights file never "
        "needs (loading a checkpoint never runs code from it)"
    )


# ---- .pth and other torch files --------------------------------------------------------------------


def _check_zip_sizes(path: str) -> None:
    """A zip-format torch file must not declare more bytes than it holds (torch stores members
    uncompressed, so only a crafted file inflates)."""
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    size = os.path.getsize(path)
    if declared > size:
        raise UnreadableCheckpointError(
            f"refusing checkpoint {path}: its zip members declare {declared:,} bytes, more than the "
            f"{size:,} bytes of the file (torch writes them uncompressed; this one would inflate)"
        )


_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def load_torch_weights(path: str) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`; a refused global raises
    UnsafeCheckpointError naming it, other failures pass through."""
    if zipfile.is_zipfile(path):  # torch's own format since 1.6, read lazily from the file
        _check_zip_sizes(path)
        source: Any = path
    else:
        # The legacy format is a run of pickles read from the file object: from a file, Python reads a
        # length the pickle states by allocating it first (5 bytes asked for 64 MiB); from memory it
        # reads what there is.
        with open(path, "rb") as f:
            source = io.BytesIO(f.read())
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL_IN_MESSAGE.search(str(e))
        if found:
            raise _refused(path, found.group(1)) from None
        detail = _UNPICKLER_DETAIL.search(str(e))
        if detail:  # PyTorch's message is a page about weights_only; its one fact is this line
            raise UnreadableCheckpointError(
                f"cannot read checkpoint {path}: PyTorch's safe unpickler stops at: {detail.group(1).strip()}"
            ) from None
        raise


# ---- .pkl files -------------------------------------------------------------------------------------

_NUMERIC_KINDS = "biufc"  # bool, signed / unsigned integers, floats, complex numbers


class _NDArrayType:
    """Stands for `numpy.ndarray` in a pickle: only a marker for `_reconstruct`, never instantiated."""


class _DTypeBuilder:
    """Stands for `numpy.dtype(spec, align, copy)` plus its `__setstate__`: a numeric dtype, built by
    `finish()` from validated values."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or not re.fullmatch(r"[<>|=]?[biufc?][0-9]{0,2}", spec):
            raise ValueError(f"dtype {spec!r} is not a numeric dtype")
        dtype = np.dtype(spec)
        if dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"dtype {spec!r} is not a numeric dtype")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and state[0] in (3, 4)
            and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None)
            and state[7] == 0
        ):
            raise ValueError(f"dtype state {state!r:.80} is not that of a plain numeric dtype")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])

    def finish(self) -> np.dtype:
        dtype = getattr(self, "dtype", None)
        if dtype is None:
            raise ValueError("a dtype was created without a type")
        return dtype


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, _DTypeBuilder):
        return value.finish()
    return _DTypeBuilder(value).finish()  # a type code such as b"b" or "f4"


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):  # a Python 2 pickle's str, decoded as latin1
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise ValueError(f"array data is a {type(data).__name__}, not bytes")


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"array shape {shape!r:.80} is not a tuple of sizes")
    return tuple(shape)


def _array(data: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    """A new, writable array from its raw bytes, checked to hold exactly prod(shape) elements."""
    dtype, shape, raw = _as_dtype(dtype), _shape(shape), _as_bytes(data)
    count = int(np.prod(shape, dtype=object))
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"array of shape {shape} and dtype {dtype} cannot hold {len(raw)} bytes")
    return np.frombuffer(raw, dtype, count).reshape(shape, order="F" if fortran else "C").copy(order="K")


class _ArrayBuilder:
    """Stands for an ndarray made by `numpy.core.multiarray._reconstruct` and filled by its
    `__setstate__`; `finish()` builds the real array."""

    def __init__(self, data: Any = None, dtype: Any = None, shape: Any = None, fortran: bool = False):
        self.state = (data, dtype, shape, fortran) if dtype is not None else None

    def __setstate__(self, state: Any) -> None:
        # ndarray state: ([version,] shape, dtype, is_fortran, raw data)
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[2], (bool, int))):
            raise ValueError(f"array state {state!r:.80} is not (shape, dtype, is_fortran, data)")
        shape, dtype, fortran, data = state
        self.state = (data, dtype, shape, bool(fortran))

    def finish(self) -> np.ndarray:
        if self.state is None:
            raise ValueError("an array was created without data")
        return _array(*self.state)


class _ScalarBuilder:
    """Stands for `numpy.core.multiarray.scalar(dtype, data)`: one numeric value."""

    def __init__(self, dtype: Any, data: Any = None) -> None:
        self.dtype, self.data = dtype, data

    def finish(self) -> np.generic:
        return _array(self.data, self.dtype, (), False)[()]


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayBuilder:
    if subtype is not _NDArrayType:
        raise ValueError(f"_reconstruct of {subtype!r:.60}, not of numpy.ndarray")
    return _ArrayBuilder()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> _ArrayBuilder:
    return _ArrayBuilder(buffer, dtype, shape, order == "F")


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocols 0-2
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode of {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


def _small_container(kind: type) -> Any:
    """`kind` (set, bytes, ...) built from an iterable only: `bytes(n)` would allocate n bytes."""

    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple, str, bytes)):
            raise ValueError(f"{kind.__name__}() called with {type(items).__name__}, not a sequence")
        if kind in (bytes, bytearray) and isinstance(items, str):
            return kind(items, "latin1")
        return kind(items)

    return build


_ALLOWED_GLOBALS = {
    **{
        (module, "_reconstruct"): _reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "scalar"): _ScalarBuilder for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DTypeBuilder,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # protocols 0-2 write these as calls; Python 2 files name their module __builtin__
    **{
        (module, kind.__name__): _small_container(kind)
        for module in ("builtins", "__builtin__")
        for kind in (set, frozenset, bytes, bytearray)
    },
}

_BUILDERS = (_ArrayBuilder, _ScalarBuilder, _DTypeBuilder)
_SCALARS = (str, bytes, bytearray, int, float, complex, bool, type(None))


class _WeightsUnpickler(pickle.Unpickler):
    """Resolves only the globals of `_ALLOWED_GLOBALS`; no persistent ids, no out-of-band buffers."""

    def __init__(self, file: Any, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise _refused(self.path, f"{module}.{name}")
        return found


def _finish(obj: Any, path: str, budget: int) -> Any:
    """`obj` with the builders replaced by numpy objects, checked to hold only allowed types; the arrays
    may not hold more than `budget` bytes in all (the file's own size: pickled data is never shared)."""
    done: dict[int, Any] = {}
    total = 0

    def convert(value: Any) -> Any:
        nonlocal total
        if isinstance(value, _SCALARS):
            return value
        key = id(value)
        if key in done:
            if done[key] is _IN_PROGRESS:
                raise UnreadableCheckpointError(f"cannot read checkpoint {path}: it refers to itself")
            return done[key]
        done[key] = _IN_PROGRESS
        if isinstance(value, (_ArrayBuilder, _ScalarBuilder)):
            out = value.finish()
            total += out.nbytes
            if total > budget:
                raise UnreadableCheckpointError(
                    f"cannot read checkpoint {path}: its arrays hold more bytes than the file ({budget:,})"
                )
        elif isinstance(value, _DTypeBuilder):
            out = value.finish()
        elif isinstance(value, dict):
            out = type(value)((_key(k), convert(v)) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            out = type(value)(convert(v) for v in value)
        elif isinstance(value, (set, frozenset)):
            out = type(value)(_key(v) for v in value)
        else:
            raise UnreadableCheckpointError(
                f"cannot read checkpoint {path}: it holds a {type(value).__name__} object, not weights"
            )
        done[key] = out
        return out

    def _key(key: Any) -> Any:
        if not isinstance(key, (*_SCALARS, tuple)) or isinstance(key, _BUILDERS):
            raise UnreadableCheckpointError(
                f"cannot read checkpoint {path}: a dict key is a {type(key).__name__}"
            )
        return convert(key)

    return convert(obj)


_IN_PROGRESS = object()


def _check_lengths(data: bytes, path: str) -> None:
    """Walk the opcodes of a pickle without running them: every length an opcode states must fit in the
    file (the C unpickler allocates a BINBYTES' stated length before reading it: 5 bytes could ask for
    4 GiB)."""
    try:
        for _ in pickletools.genops(data):
            pass
    except ValueError as e:
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {path}: it is truncated or not a pickle ({e})"
        ) from None


def load_pickle_weights(path: str) -> Any:
    """The content of a model-zoo `.pkl` through the restricted unpickler (see the module docstring)."""
    with open(path, "rb") as f:
        data = f.read()
    _check_lengths(data, path)
    try:
        loaded = _WeightsUnpickler(io.BytesIO(data), path).load()
        return _finish(loaded, path, len(data))
    except CheckpointError:
        raise
    except RecursionError:
        raise UnreadableCheckpointError(f"cannot read checkpoint {path}: it nests too deep") from None
    except (ValueError, TypeError) as e:  # from the builders: the message says what is wrong
        raise UnreadableCheckpointError(f"cannot read checkpoint {path}: {e}") from None


def load_checkpoint_file(path: str) -> Any:
    """What the checkpoint file at `path` holds, loaded without running code from it: `.pkl` through the
    restricted unpickler, anything else through `torch.load(weights_only=True)`."""
    if path.endswith(".pkl"):
        return load_pickle_weights(path)
    return load_torch_weights(path)
