"""``nequip-evaluate``: the argument parser; the work is in :mod:`aniso_nequip.evaluation`."""

import argparse
import sys

from ..domain import REFERENCE_HELP
from ..errors import InputError

EXAMPLES = """examples:
  nequip-evaluate --data datasets/mp_subset_test.extxyz.gz --out eval/mp_test   # the ready model
  nequip-evaluate --model outputs/2026-11-26/12-00-00/best.ckpt \\
      --data datasets/mp_subset_test.extxyz.gz --out eval/mp_test
  nequip-evaluate --model model.nequip.zip --data a.extxyz b.extxyz --out eval/ab --device cuda

writes into OUT: predictions.extxyz (inputs + info["<field>_pred"]), predictions.csv,
metrics.json, metrics.md, parity_eps_poly.png, parity_anisotropy_ratio.png,
parity_refractive_indices.png
"""


def main(argv=None) -> int:
    from ..evaluation import evaluate

    parser = argparse.ArgumentParser(
        prog="nequip-evaluate",
        description="Evaluate a trained dielectric-tensor model (checkpoint or nequip-package).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=None,
        help="training checkpoint (.ckpt), package (.nequip.zip) or compiled model (.nequip.pt2) "
        "(default: the ready model shipped with the package, as `aniso-nequip predict` uses)",
    )
    parser.add_argument(
        "--data", required=True, nargs="+", help="extxyz (.gz allowed) or .h5 file(s)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, when a frame cannot be predicted or its reference tensor "
        "is unusable (by default it is skipped or left out of the metrics, and listed)",
    )
    parser.add_argument("--domain-reference", help=REFERENCE_HELP)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    try:
        evaluate(
            args.model,
            args.data,
            args.out,
            args.batch_size,
            args.device,
            args.force,
            strict=args.strict,
            domain_reference=args.domain_reference,
        )
    except InputError as err:
        print(f"nequip-evaluate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
