"""Cost of the four readouts (`readout` = linear, square, log, local_field) and the size up to
which the local-field readout's dense 3N x 3N solve stays practical.

Prints JSON: for each readout, the mean forward and forward+backward time per structure of a
small float32 AnisoNet (configs/tiny.yaml's sizes) on bundled test crystals, in batches; and for
the local-field readout against the linear one, the forward+backward time of one structure
against its atom count (supercells of one bundled cubic crystal).

    python -m benchmarks.readouts
    python -m benchmarks.readouts --structures 64 --max-atoms 256 --threads 1 --out readouts.json
"""

import argparse
import json
import pathlib
import sys
import time

import ase.io
import numpy as np
import torch
from nequip.utils.global_state import set_global_state

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.variables import READOUTS
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(
    l_max=2,
    num_features=8,
    num_layers=1,
    num_basis=6,
    r_max=5.0,
    avg_num_neighbors=20.0,
    isotropic_shift=5.0,
    isotropic_scale=2.0,
    anisotropic_scale=1.0,
)


def _model(readout, type_names):
    return AnisoNetModel(
        seed=0, model_dtype="float32", type_names=type_names, readout=readout, **TINY
    )


def _time(model, data, backward):
    start = time.perf_counter()
    out = model(dict(data))["dielectric_tensor"]
    if backward:
        out.square().sum().backward()
    return time.perf_counter() - start


def per_structure(frames, type_names, batch_size=8, repeats=2):
    """Seconds per structure of each readout, forward and forward+backward (best of repeats)."""
    batches = [
        atoms_to_graphs(frames[i : i + batch_size], type_names, TINY["r_max"])
        for i in range(0, len(frames), batch_size)
    ]
    result = {}
    for readout in READOUTS:
        model = _model(readout, type_names)
        row = {}
        for backward in (False, True):
            with torch.set_grad_enabled(backward):
                best = min(sum(_time(model, b, backward) for b in batches) for _ in range(repeats))
            row["forward+backward_s" if backward else "forward_s"] = best / len(frames)
        result[readout] = row
    return result


def scaling(atoms, type_names, max_atoms):
    """Local-field forward+backward seconds of one structure against its number of atoms."""
    model, baseline = _model("local_field", type_names), _model("linear", type_names)
    rows = []
    for reps in ((1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 3, 2), (3, 3, 3), (4, 4, 4)):
        cell = atoms.repeat(reps)
        if len(cell) > max_atoms:
            break
        data = atoms_to_graphs([cell], type_names, TINY["r_max"])
        linear = _time(baseline, data, True)
        seconds = _time(model, data, True)
        rows.append({"atoms": len(cell), "local_field_s": seconds, "linear_s": linear})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structures", type=int, default=32, help="bundled test crystals timed")
    parser.add_argument("--max-atoms", type=int, default=216, help="largest supercell timed")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    set_global_state()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = ase.io.read(ROOT / "datasets" / "mp_subset_test.extxyz.gz", f":{args.structures}")
    type_names = sorted({s for f in frames for s in f.symbols})
    cubic = next(f for f in frames if f.info["crystal_system"] == "cubic" and len(f) <= 8)
    report = {
        "machine": describe(),
        "threads": torch.get_num_threads(),
        "structures": len(frames),
        "mean_atoms": float(np.mean([len(f) for f in frames])),
        "per_structure": per_structure(frames, type_names),
        "local_field_scaling": scaling(cubic, type_names, args.max_atoms),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
