"""The ready model (PBE) against experiment on well-known crystals, for the model card.

Each crystal is built here from experimental lattice constants and Wyckoff positions; its
experimental electronic dielectric constants are either ``eps_inf`` (long-wavelength limit below
the phonons, "eps") or refractive indices at the sodium D line, 589 nm ("n", squared here: a few
per cent above ``eps_inf`` by dispersion for the wide-gap crystals), each with its source. The
script predicts them with the shipped model, compares the optical description (class, sign,
principal values) and writes ``benchmarks/experiment.json`` and the "PBE vs experiment" section
of ``aniso_nequip/pretrained/MODEL_CARD.md`` (``experiment`` in ``model_card.json``; the model
files are not touched)::

    python -m benchmarks.experiment
    python -m benchmarks.experiment --out /tmp/experiment.json --shipped /tmp/pretrained
"""

import argparse
import json
import pathlib

import numpy as np
from ase.spacegroup import crystal

from aniso_nequip.data.validation import reduced_formula
from aniso_nequip.inference import predict
from aniso_nequip.io import atomic_file
from aniso_nequip.optics import describe
from release.ship_model import SHIPPED, model_card_markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "experiment.json"
CRC = "CRC Handbook of Chemistry and Physics, optical properties of crystals and minerals (589 nm)"
MADELUNG = "O. Madelung, Semiconductors: Data Handbook, 3rd ed., Springer (2004)"
CUBIC = [90, 90, 90]
HEXAGONAL = [90, 90, 120]

# name, species, Wyckoff basis, space group, (a, b, c) in A, angles;
# (kind, principal values along the crystal axes: one (cubic), (ordinary, extraordinary)
# (uniaxial) or along (a, b, c) (orthorhombic)), source
CRYSTALS = [
    ("Si (diamond)", ["Si"], [(0, 0, 0)], 227, [5.431] * 3, CUBIC, ("eps", [11.7]), MADELUNG),
    (
        "GaAs (zincblende)",
        ["Ga", "As"],
        [(0, 0, 0), (0.25, 0.25, 0.25)],
        216,
        [5.653] * 3,
        CUBIC,
        ("eps", [10.9]),
        MADELUNG,
    ),
    (
        "ZnS (zincblende)",
        ["Zn", "S"],
        [(0, 0, 0), (0.25, 0.25, 0.25)],
        216,
        [5.409] * 3,
        CUBIC,
        ("eps", [5.1]),
        MADELUNG,
    ),
    ("C (diamond)", ["C"], [(0, 0, 0)], 227, [3.567] * 3, CUBIC, ("n", [2.417]), CRC),
    (
        "NaCl (rock salt)",
        ["Na", "Cl"],
        [(0, 0, 0), (0.5, 0.5, 0.5)],
        225,
        [5.640] * 3,
        CUBIC,
        ("n", [1.544]),
        CRC,
    ),
    (
        "MgO (periclase)",
        ["Mg", "O"],
        [(0, 0, 0), (0.5, 0.5, 0.5)],
        225,
        [4.212] * 3,
        CUBIC,
        ("n", [1.736]),
        CRC,
    ),
    (
        "LiF",
        ["Li", "F"],
        [(0, 0, 0), (0.5, 0.5, 0.5)],
        225,
        [4.027] * 3,
        CUBIC,
        ("n", [1.392]),
        CRC,
    ),
    (
        "ZnO (wurtzite)",
        ["Zn", "O"],
        [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)],
        186,
        [3.250, 3.250, 5.207],
        HEXAGONAL,
        ("eps", [3.70, 3.78]),
        MADELUNG,
    ),
    (
        "TiO2 (rutile)",
        ["Ti", "O"],
        [(0, 0, 0), (0.3049, 0.3049, 0)],
        136,
        [4.594, 4.594, 2.959],
        CUBIC,
        ("n", [2.613, 2.909]),
        CRC,
    ),
    (
        "SiO2 (alpha-quartz)",
        ["Si", "O"],
        [(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
        154,
        [4.913, 4.913, 5.405],
        HEXAGONAL,
        ("n", [1.544, 1.553]),
        CRC,
    ),
    (
        "CaCO3 (calcite)",
        ["Ca", "C", "O"],
        [(0, 0, 0), (0, 0, 0.25), (0.2578, 0, 0.25)],
        167,
        [4.990, 4.990, 17.061],
        HEXAGONAL,
        ("n", [1.658, 1.486]),
        CRC,
    ),
    (
        "Al2O3 (sapphire)",
        ["Al", "O"],
        [(0, 0, 0.3521), (0.3064, 0, 0.25)],
        167,
        [4.759, 4.759, 12.991],
        HEXAGONAL,
        ("n", [1.768, 1.760]),
        CRC,
    ),
    (
        "BN (hexagonal)",
        ["B", "N"],
        [(1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, 0.75)],
        194,
        [2.504, 2.504, 6.661],
        HEXAGONAL,
        ("eps", [4.95, 4.10]),
        "R. Geick, C. H. Perry, G. Rupprecht, Phys. Rev. 146, 543 (1966)",
    ),
    (
        "MoS2 (2H)",
        ["Mo", "S"],
        [(1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, 0.621)],
        194,
        [3.160, 3.160, 12.294],
        HEXAGONAL,
        ("eps", [15.2, 6.2]),
        "T. J. Wieting, J. L. Verble, Phys. Rev. B 3, 4286 (1971)",
    ),
    (
        "CaCO3 (aragonite, Pnma)",
        ["Ca", "C", "O", "O"],
        [
            (0.75985, 0.25, 0.41502),
            (-0.0823, 0.25, 0.76211),
            (-0.0961, 0.25, 0.9222),
            (-0.0862, 0.4736, 0.68065),
        ],
        62,
        [5.7407, 4.9611, 7.9672],
        CUBIC,
        ("n", [1.530, 1.680, 1.685]),
        "W. A. Deer, R. A. Howie, J. Zussman, "
        "An Introduction to the Rock-Forming Minerals (589 nm)",
    ),
]


def experimental_tensor(values, n_axes: int) -> np.ndarray:
    """The experimental tensor in the frame of the built cell (c along z): ``eps`` values along
    x, y, z from one (cubic), two (ordinary, extraordinary) or three values."""
    if n_axes == 1:
        return np.eye(3) * values[0]
    if n_axes == 2:
        return np.diag([values[0], values[0], values[1]])
    return np.diag(values)


def compare():
    """Per crystal: experimental and predicted optical description; and the summary."""
    structures, experiments, rows = [], [], []
    for name, species, basis, group, lengths, angles, (kind, values), source in CRYSTALS:
        atoms = crystal(species, basis, spacegroup=group, cellpar=[*lengths, *angles])
        eps = np.square(values) if kind == "n" else np.asarray(values, dtype=float)
        structures.append(atoms)
        experiments.append((experimental_tensor(eps, len(values)), kind, source, name))
    predicted = predict(structures, device="cpu")
    for atoms, (exp_eps, kind, source, name), pred in zip(structures, experiments, predicted):
        exp, model = describe(exp_eps, atoms), describe(pred, atoms)
        exp_poly, pred_poly = np.trace(exp_eps) / 3, np.trace(pred) / 3
        rows.append(
            {
                "crystal": name,
                "formula": reduced_formula(atoms),
                "optical_class": exp.optical_class,
                "experiment_kind": "n^2 at 589 nm" if kind == "n" else "eps_inf",
                "source": source,
                "sign_experiment": exp.optical_sign,
                "sign_predicted": model.optical_sign,
                "eps_poly_experiment": float(exp_poly),
                "eps_poly_predicted": float(pred_poly),
                "eps_poly_relative_error": float(pred_poly / exp_poly - 1),
                "n_experiment": [float(v) for v in exp.refractive_indices],
                "n_predicted": [float(v) for v in model.refractive_indices],
                "birefringence_experiment": float(exp.birefringence),
                "birefringence_predicted": float(model.birefringence),
            }
        )
    anisotropic = [r for r in rows if r["optical_class"] != "isotropic"]
    errors = np.array([r["eps_poly_relative_error"] for r in rows])
    return {
        "n_crystals": len(rows),
        "n_anisotropic": len(anisotropic),
        "signs_right": sum(r["sign_experiment"] == r["sign_predicted"] for r in anisotropic),
        "eps_poly_median_abs_relative_error": float(np.median(np.abs(errors))),
        "eps_poly_median_relative_error": float(np.median(errors)),
        "crystals": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(OUT), help="the JSON written")
    parser.add_argument(
        "--shipped", default=str(SHIPPED), help="folder of the model card (default: the package's)"
    )
    args = parser.parse_args(argv)
    shipped = pathlib.Path(args.shipped)
    result = compare()
    with atomic_file(args.out, force=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    card = json.loads((shipped / "model_card.json").read_text())
    card["experiment"] = result
    with atomic_file(shipped / "model_card.json", force=True) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    with atomic_file(shipped / "MODEL_CARD.md", force=True) as tmp:
        tmp.write_text(model_card_markdown(card))
    print(json.dumps({k: v for k, v in result.items() if k != "crystals"}, indent=1))
    for r in result["crystals"]:
        print(
            f"{r['crystal']:<26} eps_poly exp {r['eps_poly_experiment']:6.2f} "
            f"pred {r['eps_poly_predicted']:6.2f} ({100 * r['eps_poly_relative_error']:+.0f}%)  "
            f"sign exp {r['sign_experiment']} pred {r['sign_predicted']}"
        )


if __name__ == "__main__":
    main()
