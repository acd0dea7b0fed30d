"""The variables of a training config, checked as soon as ``nequip-train`` starts."""

import pathlib
import traceback

from hydra.experimental.callback import Callback

from ..errors import InputError, error_line, traceback_wanted
from ..variables import check_config

_HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _remove_job_files(config) -> None:
    """Remove what Hydra wrote for this job before it started (``.hydra/`` and an empty log),
    and the run directory when that leaves it empty."""
    out = pathlib.Path(config.hydra.runtime.output_dir)
    log = out / f"{config.hydra.job.name}.log"
    if log.is_file() and log.stat().st_size == 0:
        log.unlink()
    folders = [out]
    if config.hydra.output_subdir is not None:
        folders.insert(0, out / config.hydra.output_subdir)
        for name in _HYDRA_FILES:
            (folders[0] / name).unlink(missing_ok=True)
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


class CheckVariables(Callback):
    """Hydra callback that checks the config's top-level variables against
    :data:`aniso_nequip.variables.RULES` when the job starts, before ``nequip-train`` reads any
    data or builds the model.

    Hydra turns a callback's exceptions into warnings, so a value out of range ends the process
    here with the one-line message of the :class:`~aniso_nequip.errors.InputError` (exit code 1,
    after its traceback with ``ANISO_NEQUIP_TRACEBACK=1``), leaving no run directory behind.
    Every config has it (``hydra.callbacks.check`` in ``configs/anisonet.yaml``).
    """

    def on_job_start(self, config, **kwargs) -> None:
        try:
            check_config(config)
        except InputError as err:
            _remove_job_files(config)
            if traceback_wanted():
                traceback.print_exc()
            raise SystemExit(error_line(err)) from err
