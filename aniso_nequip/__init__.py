"""aniso-nequip: equivariant prediction of dielectric tensors as a nequip extension.

This module is imported by nequip's ``nequip.extension`` entry point *inside* nequip's own
``__init__``: it must only register data fields (importing ``nequip.model`` or ``nequip.train``
here would be a circular import).
"""

from . import _keys  # noqa: F401  (registers the fields nequip lacks)

__version__ = "0.1.0"
