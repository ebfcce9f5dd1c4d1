"""Read a pickle that may only hold plain data: the CIFAR batch reader's unpickler.

A pickle can name any importable callable and have it called while loading (``__reduce__``), so a
CIFAR folder from an untrusted source could run code through ``pickle.load``. :func:`load_data_pickle`
uses an unpickler whose ``find_class`` admits only what numpy needs to rebuild an ``ndarray`` of a
plain dtype (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``, ``_frombuffer``
for protocol 5,
``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode``, which is how Python 3 writes ``bytes`` at
protocol 2); dicts, lists, tuples, strings, bytes and numbers need no class at
all. Anything else -- ``os.system``, ``builtins.eval``, any other class -- is refused with
:class:`~rene_onnx.errors.UnsafeFileError` before it is called, and arrays of Python objects
(dtype ``object``) are refused too.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from rene_onnx.errors import UnsafeFileError

#: (module, name) pairs the unpickler may look up
ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2 (a codec transform, no code)
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise UnsafeFileError(f"{self.path}: the pickle asks for {module}.{name}, which a data file does not "
                                  f"need; refusing to load it (only dicts, lists, strings, numbers and numpy arrays "
                                  f"are read)")
        return super().find_class(module, name)


def load_data_pickle(path: str | Path):
    """Unpickle ``path`` allowing only plain data and numpy arrays of plain dtypes (see the module docstring)."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _DataUnpickler(io.BytesIO(data), path).load()
    except UnsafeFileError:
        raise
    except Exception as e:  # truncated / not a pickle
        raise UnsafeFileError(f"{path}: not a readable data pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj, path)
    return obj


def _check_plain(obj, path: Path, depth: int = 0) -> None:
    if depth > 16:
        raise UnsafeFileError(f"{path}: nested too deeply for a data file")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafeFileError(f"{path}: holds an array of Python objects; refusing it (data arrays are numeric)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, path, depth + 1)
            _check_plain(v, path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        if obj and not isinstance(obj[0], (int, float, bytes, str)):
            for v in obj:
                _check_plain(v, path, depth + 1)
    elif not isinstance(obj, (int, float, bool, str, bytes, type(None))):
        raise UnsafeFileError(f"{path}: holds a {type(obj).__name__}, which a data file does not")
