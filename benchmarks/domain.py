"""Does the domain score rank the errors? The ready model's domain score (``aniso_nequip.domain``)
against its absolute errors of ``eps_poly`` and ``a_r``, on the bundled ``mp_subset`` test split
and on ``phonondb`` (PBEsol; all its splits, less the crystals that are also in the
``mp_subset`` training split), and the flag threshold chosen from them; then solid neon (fcc,
a = 4.46 A, real eps_inf about 1.2), which no training crystal resembles.

Threshold rule: the smallest score on a grid from 1 (the median validation crystal) in steps of
0.25 that flags at most a third of the MP test split (a flag raised on most ordinary crystals
tells nothing) and above which the crystals' mean absolute errors are at least twice those of
the crystals at or below it, for both quantities on both sets.

    python -m benchmarks.domain          # writes benchmarks/runs/domain/domain.json (~5 min CPU)
    python -m benchmarks.results         # renders it into benchmarks/RESULTS.md
"""

import argparse
import datetime
import json
import pathlib

import ase.io
import numpy as np
from ase.build import bulk
from scipy.stats import spearmanr

from aniso_nequip import predict
from aniso_nequip.data.matching import StructureIndex
from aniso_nequip.data.validation import reference_tensor
from aniso_nequip.domain import FLAG_THRESHOLD
from aniso_nequip.io import write_json
from aniso_nequip.metrics import derived
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets"
GRID = np.arange(1.0, 3.01, 0.25)
MAX_FLAGGED = 1 / 3  # of the MP test split
QUANTITIES = ("eps_poly", "a_r")


def datasets(slice_n=None):
    """``{name: frames}``: the MP test split and phonondb less the MP training crystals (the
    first ``slice_n`` crystals of each, when given)."""
    train = StructureIndex(ase.io.read(DATA / "mp_subset_train.extxyz.gz", ":"))
    phonondb = [
        a
        for split in ("train", "val", "test")
        for a in ase.io.read(DATA / f"phonondb_{split}.extxyz.gz", ":")
    ]
    return {
        "mp_subset_test": ase.io.read(DATA / "mp_subset_test.extxyz.gz", ":")[:slice_n],
        "phonondb_not_in_mp_train": [a for a in phonondb if a not in train][:slice_n],
    }


def measure(frames, batch_size):
    """Domain scores and absolute errors of the ready model on ``frames``."""
    predicted, domain = predict(frames, batch_size=batch_size, device="cpu", domain=True)
    reference = np.stack([reference_tensor(a) for a in frames])
    pred, ref = derived(predicted), derived(reference)
    errors = {q: np.abs(pred[q] - ref[q]) for q in QUANTITIES}
    return domain.score, errors


def thresholds(score, errors):
    """Per grid threshold: crystals above it and their mean errors against those below."""
    rows = []
    for t in GRID:
        above = score > t
        row = {"threshold": float(t), "n_above": int(above.sum()), "fraction": float(above.mean())}
        for q in QUANTITIES:
            inside = float(errors[q][~above].mean()) if (~above).any() else float("nan")
            outside = float(errors[q][above].mean()) if above.any() else float("nan")
            row[f"{q}_mae_in"], row[f"{q}_mae_out"] = inside, outside
            row[f"{q}_ratio"] = outside / inside if above.any() and inside > 0 else float("nan")
        rows.append(row)
    return rows


def choose(per_set) -> float:
    """The threshold rule of the module docstring (``nan`` when no grid point satisfies it)."""
    for i, t in enumerate(GRID):
        ratios = [s["thresholds"][i][f"{q}_ratio"] for s in per_set.values() for q in QUANTITIES]
        if per_set["mp_subset_test"]["thresholds"][i]["fraction"] <= MAX_FLAGGED and all(
            r >= 2 for r in ratios
        ):
            return float(t)
    return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "domain"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--slice", type=int, dest="slice_n", help="only the first N crystals of each set (smoke)"
    )
    args = parser.parse_args(argv)

    per_set = {}
    for name, frames in datasets(args.slice_n).items():
        score, errors = measure(frames, args.batch_size)
        per_set[name] = {
            "n": len(frames),
            "score_quantiles": {
                f"{q:g}": float(np.quantile(score, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)
            },
            **{f"spearman_{q}": float(spearmanr(score, errors[q])[0]) for q in QUANTITIES},
            **{f"{q}_mae": float(errors[q].mean()) for q in QUANTITIES},
            "thresholds": thresholds(score, errors),
        }
    neon = bulk("Ne", "fcc", a=4.46)
    eps, domain = predict([neon], device="cpu", domain=True)
    result = {
        "sets": per_set,
        "chosen_threshold": choose(per_set),
        "max_flagged_mp_test": MAX_FLAGGED,
        "shipped_threshold": FLAG_THRESHOLD,
        "neon": {
            "eps_poly_pred": float(np.trace(eps[0]) / 3),
            "eps_poly_real": 1.2,
            **{k: v for k, v in domain.values(0).items()},
        },
        "machine": describe(),
        "date": datetime.date.today().isoformat(),
    }
    path = pathlib.Path(args.out) / "domain.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, path, force=True)
    print(json.dumps({k: result[k] for k in ("chosen_threshold", "neon")}, indent=1))
    for name, s in per_set.items():
        print(name, s["n"], {k: round(v, 3) for k, v in s.items() if k.startswith("spearman")})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
