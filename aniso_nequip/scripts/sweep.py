"""``aniso-nequip sweep``: the argument parser; the work is in :mod:`aniso_nequip.sweep`."""

from . import add_command

SWEEP_EXAMPLES = """examples:
  aniso-nequip sweep configs/sweeps/anisonet_bo.yaml                  # the paper's BO
  aniso-nequip sweep configs/sweeps/anisonet_grid.yaml max_epochs=60  # overrides for every trial
  aniso-nequip sweep configs/sweeps/tiny.yaml --n-trials 3

Re-running the same command resumes the study. Several workers (processes or machines) share one
study through its storage URL; give each its own GPU with CUDA_VISIBLE_DEVICES.
"""


def _run(args) -> None:
    from ..sweep import run_and_report

    print(run_and_report(args.spec, n_trials=args.n_trials, overrides=args.overrides))


def add_parser(commands) -> None:
    """Add ``sweep``."""
    sweep = add_command(
        commands,
        "sweep",
        "optuna hyperparameter sweep of nequip-train runs (YAML spec)",
        SWEEP_EXAMPLES,
        _run,
    )
    sweep.add_argument("spec", help="sweep spec YAML, e.g. configs/sweeps/anisonet_bo.yaml")
    sweep.add_argument("--n-trials", type=int, help="finished trials wanted in the study")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every trial")
