"""The package's one user-facing error type.

:class:`InputError` means the user gave something unusable: a missing, empty or malformed file, an
invalid setting, an output that exists. Its message names the input and what is wrong with it;
commands print it as ``error: ...`` without a traceback and exit with code 2. More specific errors
subclass it (:class:`~aniso_nequip.io.OutputExistsError`,
:class:`~aniso_nequip.data.mp.DocumentError`, :class:`~aniso_nequip.inference.ModelLoadError`,
:class:`~aniso_nequip.sweep.SpecError`, :class:`~aniso_nequip.sweep.SweepFailed`,
:class:`~aniso_nequip.screen.runner.ShardsMissingError`,
:class:`~aniso_nequip.io.OutputInUseError`),
so callers catch them all as ``InputError``; anything else is a bug and keeps its traceback.

nequip's own commands (``nequip-train``, ``nequip-package``, ...) run our code inside Hydra and
Lightning, which print the full traceback of every error. :func:`install_excepthook` (called when
the package is imported by such a command) prints an uncaught error that is, or was raised from,
an :class:`InputError` as one line ``nequip-train: error: ...`` instead (exit code 1);
``ANISO_NEQUIP_TRACEBACK=1`` shows the traceback all the same.
"""

import os
import sys
from typing import Optional

TRACEBACK_VARIABLE = "ANISO_NEQUIP_TRACEBACK"


class InputError(ValueError):
    """An input (file, frame, material id, option) is unusable; the message says which and why."""


def not_a_file(path) -> str:
    """Why ``path``, which is not a file, cannot be read: ``is a folder, not a file`` or
    ``does not exist`` (for messages such as ``data file `x` does not exist``)."""
    return "is a folder, not a file" if os.path.isdir(path) else "does not exist"


def input_error_in(error: BaseException) -> Optional[InputError]:
    """The :class:`InputError` that ``error`` is or was raised from (following ``__cause__`` and
    ``__context__``, as Hydra wraps errors of the objects it builds), else ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _program() -> str:
    """The name of the running command (``nequip-train``, ...); ``""`` when there is none."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""


def error_line(error: BaseException) -> str:
    """``<program>: error: <message>``, the one line a command prints for ``error``."""
    return f"{_program() or 'python'}: error: {error}"


def traceback_wanted() -> bool:
    """Whether ``ANISO_NEQUIP_TRACEBACK`` asks for tracebacks of input errors too."""
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


def _excepthook(kind, error, traceback, previous=sys.excepthook) -> None:
    found = input_error_in(error)
    if found is None or traceback_wanted():
        previous(kind, error, traceback)
    else:
        print(error_line(found), file=sys.stderr)


def install_excepthook() -> None:
    """Print uncaught :class:`InputError` s of nequip's commands (programs named ``nequip-*``)
    as one line without a traceback; other programs and other errors are left alone."""
    if _program().startswith("nequip-") and sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
