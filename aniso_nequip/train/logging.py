"""Lightning loggers for the training configs: CSV always, Weights & Biases on request."""

import os
import warnings
from typing import List, Optional


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


def loggers(
    save_dir: str,
    wandb: bool = False,
    wandb_project: str = "aniso-nequip",
    wandb_group: Optional[str] = None,
    wandb_name: Optional[str] = None,
) -> List:
    """``[CSVLogger]`` (``save_dir/csv/version_N/metrics.csv``), plus a ``WandbLogger`` when
    ``wandb`` is true.

    Without wandb credentials (``WANDB_API_KEY`` or a ``~/.netrc`` entry) and no explicit
    ``WANDB_MODE``, wandb runs offline and writes under ``save_dir/wandb``. A wandb logger that
    cannot be created only warns: logging never stops a training. Runs of one sweep share
    ``wandb_group`` (the study name).
    """
    from lightning.pytorch.loggers import CSVLogger

    out = [CSVLogger(save_dir=save_dir, name="csv")]
    if not wandb:
        return out
    if "WANDB_MODE" not in os.environ and not _wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    try:
        from lightning.pytorch.loggers import WandbLogger

        out.append(
            WandbLogger(
                project=wandb_project,
                group=wandb_group,
                name=wandb_name or os.path.basename(os.path.normpath(save_dir)),
                save_dir=save_dir,
                settings=_wandb_settings(),
            )
        )
    except Exception as err:  # never let logging break a training
        warnings.warn(f"Weights & Biases logging disabled: {type(err).__name__}: {err}")
    return out


def _wandb_settings():
    import wandb

    # do not wait long for a server; offline runs never contact one
    return wandb.Settings(init_timeout=60, silent=True)
