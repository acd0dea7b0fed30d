"""``aniso-nequip predict``: the argument parser; the work is in :mod:`aniso_nequip.prediction`."""

from ..domain import REFERENCE_HELP
from ..errors import InputError
from . import add_command

PREDICT_EXAMPLES = """examples:
  aniso-nequip predict examples/*.cif                      # the shipped ready model
  aniso-nequip predict my_structures/ POSCAR --out predictions/
  aniso-nequip predict data.extxyz --model outputs/run/best.ckpt --batch-size 64
  aniso-nequip predict a.cif --model m1.nequip.zip m2.nequip.zip   # an ensemble: mean and spread
"""


def add_parser(commands) -> None:
    """Add ``predict``."""
    parser = add_command(
        commands,
        "predict",
        "dielectric tensors of CIF/POSCAR/extxyz structures (ready model by default)",
        PREDICT_EXAMPLES,
        _run,
    )
    parser.add_argument("structures", nargs="+", help="files, folders or glob patterns")
    parser.add_argument(
        "--model",
        nargs="+",
        help="checkpoint(s) or package(s); several: an ensemble (default: the "
        "ready model shipped with aniso-nequip)",
    )
    parser.add_argument("--out", help="write predictions.csv and predictions.extxyz here")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit non-zero, writing nothing, if an input is skipped",
    )
    parser.add_argument("--domain-reference", help=REFERENCE_HELP)


def _run(args) -> None:
    from ..prediction import predict_and_write

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    predict_and_write(
        args.structures,
        args.model,
        args.out,
        args.device,
        args.batch_size,
        args.force,
        args.strict,
        domain_reference=args.domain_reference,
    )
