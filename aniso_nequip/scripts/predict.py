"""``aniso-nequip predict``: the argument parser; the work is in :mod:`aniso_nequip.prediction`."""

import contextlib

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
    parser.add_argument("--model", nargs="+",
                        help="checkpoint(s) or package(s); several: an ensemble (default: the "
                        "ready model shipped with aniso-nequip)")  # fmt: skip
    parser.add_argument("--out", help="write predictions.csv and predictions.extxyz here")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--strict", action="store_true",
                        help="exit non-zero, writing nothing, if an input is skipped")  # fmt: skip


def _run(args) -> None:
    from ..io import output_set
    from ..prediction import (
        PREDICTION_FILES,
        predict_files,
        prediction_table,
        write_prediction_files,
    )

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    claim = contextlib.nullcontext()
    if args.out:  # checked and claimed before the models are loaded
        claim = output_set(args.out, PREDICTION_FILES, force=args.force, whole_folder=True)
    with claim as stage:
        result = predict_files(args.structures, args.model, args.device, args.batch_size)
        print(prediction_table(result), end="")
        if not result.structures:
            raise InputError("no structure could be predicted (see the reasons above)")
        if result.skipped and args.strict:
            raise InputError(f"{len(result.skipped)} input(s) skipped (--strict: nothing written)")
        if stage is not None:
            write_prediction_files(result, stage)
    if args.out:
        print(f"wrote {args.out}/predictions.csv and predictions.extxyz")
