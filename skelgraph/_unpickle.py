"""Unpickling data files without running their code.

A pickle names the functions that rebuild its objects, and :func:`pickle.load` calls whatever it
names (``os.system`` as readily as ``numpy.ndarray``). :func:`load_data` allows only what data
files of arrays need: NumPy arrays, dtypes and scalars, builtin containers and numbers. Anything
else is refused with its name, before it is called.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import IO, Any

__all__ = ["ALLOWED", "load_data"]

_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str")
#: (module, name) of every callable a data pickle may name: NumPy's array, dtype and scalar
#: reconstructors (under NumPy 2's ``numpy._core`` and NumPy 1's ``numpy.core``), the byte
#: decoding of protocol-2 array pickles, and the builtin containers and numbers (``__builtin__``
#: in protocol-2 pickles); ``bytes`` and NumPy's ``_reconstruct`` through guards
ALLOWED = frozenset(
    {
        *(
            (module, name)
            for core in ("numpy.core", "numpy._core")
            for module, name in (
                (f"{core}.multiarray", "_reconstruct"),
                (f"{core}.multiarray", "scalar"),
                (f"{core}.numeric", "_frombuffer"),
            )
        ),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        *(
            (module, name)
            for module in ("builtins", "__builtin__")
            for name in (*_BUILTINS, "bytes", "slice")
        ),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
    }
)


def _bytes(*args: Any) -> bytes:
    """``bytes`` as pickles use it (``bytes()``, ``bytes(list)``), never ``bytes(n)``, which
    would allocate n bytes that the file does not hold."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError(f"refusing bytes({args[0]}): it holds no data")
    return bytes(*args)


def _reconstructor(reconstruct: Any) -> Any:
    """NumPy's ``_reconstruct(cls, shape, dtype)``, which pickles call with an empty shape (the
    data comes after); a shape with elements would allocate memory the file does not hold."""

    def guarded(cls: Any, shape: Any, dtype: Any) -> Any:
        if not isinstance(shape, tuple) or math.prod(shape) != 0:
            raise pickle.UnpicklingError(f"refusing an array of shape {shape!r} without data")
        return reconstruct(cls, shape, dtype)

    return guarded


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a data file holds arrays, numbers, strings "
                "and containers only, and loading anything else can run code"
            )
        found = super().find_class(module, name)
        if name == "bytes":
            return _bytes
        if name == "_reconstruct":
            return _reconstructor(found)
        return found


def load_data(file: IO[bytes]) -> Any:
    """The object pickled in :obj:`file`, built from arrays, dtypes and builtin values only
    (the items of an object array go through the same check).

    The file is read whole first: an unpickler reading from a file allocates what a length in
    the pickle says before it reads, while one reading from memory stops at its end.

    Raises:
        pickle.UnpicklingError: Naming the first callable that is not allowed
            (:data:`ALLOWED`), or when the pickle is malformed or asks for memory it does not
            hold data for.
    """
    try:
        return _DataUnpickler(io.BytesIO(file.read())).load()
    except MemoryError:
        raise pickle.UnpicklingError("the pickle asks for more memory than it holds") from None
