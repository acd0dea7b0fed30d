"""The package's one user-facing error type.

:class:`InputError` means the user gave something unusable: a missing, empty or malformed file, an
invalid setting, an output that exists. Its message names the input and what is wrong with it;
commands print it as ``error: ...`` without a traceback and exit with code 2. More specific errors
subclass it (:class:`~aniso_nequip.io.OutputExistsError`,
:class:`~aniso_nequip.data.mp.DocumentError`, :class:`~aniso_nequip.inference.ModelLoadError`,
:class:`~aniso_nequip.sweep.SpecError`, :class:`~aniso_nequip.screen.runner.ShardsMissingError`),
so callers catch them all as ``InputError``; anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """An input (file, frame, material id, option) is unusable; the message says which and why."""
