"""Figures behind the physical input limits of :mod:`aniso_nequip.data.validation` and the frame
check, over every bundled crystal (``datasets/mp_subset_*``, ``phonondb_*``): the closest pair
of atoms relative to their covalent radii, the widest empty gap between lattice planes of the
bulk crystals and the cells of fragments in vacuum, the eigenvalue range of the reference
tensors and their point-group deviations. Prints JSON (about a minute on one core)::

    python -m benchmarks.input_limits
    python -m benchmarks.input_limits --slice 20     # the first 20 crystals of each file (smoke)
"""

import argparse
import json
import pathlib

import ase.io
import numpy as np

from aniso_nequip.data.symmetry import FRAME_TOLERANCE, point_group_deviation
from aniso_nequip.data.validation import (
    PREDICTED_EIGENVALUE_RANGE,
    REFUSED_DISTANCE_RATIO,
    REFUSED_VACUUM,
    WARNED_DISTANCE_RATIO,
    WARNED_VACUUM,
    closest_pair,
    largest_gap,
    vacuum_problem,
)

DATASETS = pathlib.Path(__file__).resolve().parents[1] / "datasets"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--slice", type=int, dest="slice_n", help="only the first N crystals of each file (smoke)"
    )
    index = slice(parser.parse_args(argv).slice_n)
    closest, bulk_gaps, fragments, eigenvalues, deviations = [], [], {}, [], {"mp": [], "pdb": []}
    for path in sorted(DATASETS.glob("*.extxyz.gz")):
        for atoms in ase.io.read(path, index):
            name = atoms.info["entry_id"]
            pair = closest_pair(atoms, 2.0)
            closest.append((pair[1], name, pair[0]))
            if vacuum_problem(atoms):
                fragments[name] = round(largest_gap(atoms)[0], 2)
            else:
                bulk_gaps.append((largest_gap(atoms)[0], name))
            eps = np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3))
            eigenvalues.append(np.linalg.eigvalsh(eps))
            source = "mp" if path.name.startswith("mp") else "pdb"
            deviations[source].append(point_group_deviation(atoms, eps))
    ratio, name, text = min(closest)
    gap, gap_name = max(bulk_gaps)
    eigenvalues = np.array(eigenvalues)
    figures = {
        "crystals": len(closest),
        "closest_pair": {"ratio": round(ratio, 3), "crystal": name, "pair": text},
        "distance_limits": {"refused": REFUSED_DISTANCE_RATIO, "warned": WARNED_DISTANCE_RATIO},
        "widest_bulk_gap_A": {"gap": round(gap, 2), "crystal": gap_name},
        "fragments_in_vacuum": fragments,
        "vacuum_limits_A": {"refused": REFUSED_VACUUM, "warned": WARNED_VACUUM},
        "eigenvalues": {"min": float(eigenvalues.min()), "max": float(eigenvalues.max())},
        "predicted_eigenvalue_range": list(PREDICTED_EIGENVALUE_RANGE),
        "frame_tolerance": FRAME_TOLERANCE,
    }
    for source, values in deviations.items():
        values = np.array(values)
        figures[f"frame_deviation_{source}"] = {
            "median": float(np.median(values)),
            "p99": float(np.percentile(values, 99)),
            "max": float(values.max()),
            "above_tolerance": int((values > FRAME_TOLERANCE).sum()),
        }
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
