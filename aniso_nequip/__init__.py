"""aniso-nequip: equivariant prediction of dielectric tensors as a nequip extension.

This module is imported by nequip's ``nequip.extension`` entry point *inside* nequip's own
``__init__``: it only registers data fields and ``nequip-compile`` targets and makes nequip's
commands print our input errors as one line (:func:`aniso_nequip.errors.install_excepthook`);
importing ``nequip.model`` or ``nequip.train`` here would be a circular import. The inference API is
loaded lazily on first use::

    import aniso_nequip
    eps = aniso_nequip.predict(structures, "best.ckpt")   # (N, 3, 3)
    optics = aniso_nequip.predict(structures, field="optics")  # ready model: class, n_o, n_e, ...
"""

from . import _compile, _keys  # noqa: F401  (register compile targets and the fields nequip lacks)
from ._version import __version__  # noqa: F401
from .errors import install_excepthook

install_excepthook()

_LAZY = {
    "predict": "inference",
    "load_model": "inference",
    "DielectricCalculator": "calculator",
    "describe": "optics",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
