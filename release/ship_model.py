"""Rebuild the ready model shipped in ``aniso_nequip/pretrained/`` from scratch.

1. trains CONFIG for each seed on the bundled split with ``accuracy.py`` (a finished run of the
   same name and seeds is reused),
2. packages each seed's best checkpoint with ``nequip-package build``,
3. evaluates the packages on the bundled test split, one model and their ensemble (mean tensor),
   and ships the ensemble when it beats the single model on both MAEs by more than the seeds'
   spread (else the first seed's model alone),
4. writes ``model_card.json`` and ``MODEL_CARD.md`` with the measured figures (run
   ``benchmarks/experiment.py`` afterwards for the card's "PBE vs experiment" section and
   ``python -m benchmarks.discovery --card ROW`` for its discovery figures), and the
   shipped model's domain reference (``domain_reference.npz``: its training crystals' pooled
   features, calibrated on the validation split; :mod:`aniso_nequip.domain`).

    python -m release.ship_model                                  # foundation config, 3 seeds
    python -m release.ship_model --name foundation_log_spearman --members 3
    python -m release.ship_model --config configs/tiny.yaml --name smoke --seeds 0 \
        --runs /tmp/runs --shipped /tmp/pretrained                   # a smoke run elsewhere
"""

import argparse
import datetime
import hashlib
import json
import pathlib
import subprocess
import sys

import ase.data
import ase.io
import numpy as np

from aniso_nequip.data.symmetry import crystal_system
from aniso_nequip.data.validation import reference_tensor
from aniso_nequip.domain import build_reference, shipped_reference_path
from aniso_nequip.inference import predict
from aniso_nequip.io import atomic_file
from aniso_nequip.metrics import derived, tensor_metrics
from aniso_nequip.sweep.spec import compose_config
from benchmarks.accuracy import KEYS, without_most_anisotropic
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "aniso_nequip" / "pretrained"
TEST_FILE = ROOT / "datasets" / "mp_subset_test.extxyz.gz"
TRAIN_FILE = ROOT / "datasets" / "mp_subset_train.extxyz.gz"
VAL_FILE = ROOT / "datasets" / "mp_subset_val.extxyz.gz"


def test_metrics(paths):
    """MAEs of the ensemble of ``paths`` (one path: one model) on the bundled test split, overall,
    per crystal system and without its most anisotropic crystal."""
    frames = ase.io.read(TEST_FILE, ":")
    reference = np.stack([reference_tensor(a) for a in frames])
    predicted = predict(frames, [str(p) for p in paths], device="cpu")
    systems = [crystal_system(a) for a in frames]
    metrics = tensor_metrics(reference, predicted, systems)
    drop, without = without_most_anisotropic(reference, predicted)
    return {
        **{k: metrics[k] for k in KEYS},
        "without_most_anisotropic": {"left_out": frames[drop].get_chemical_formula(), **without},
        "per_crystal_system": {
            s: {
                "n": m["n"],
                "eps_poly_mae": m["eps_poly_mae"],
                "anisotropy_ratio_mae": m["anisotropy_ratio_mae"],
            }
            for s, m in metrics["per_crystal_system"].items()
        },
        "largest_a_r_errors": largest_a_r_errors(frames, reference, predicted),
    }


def largest_a_r_errors(frames, reference, predicted, n=5, ids=None):
    """The ``n`` crystals of ``frames`` whose predicted ``a_r`` is furthest from the reference's,
    worst first: formula (and ``id``, from ``ids``, when given), reference and predicted ``a_r``."""
    ref, pred = derived(reference)["a_r"], derived(predicted)["a_r"]
    return [
        {
            "formula": frames[i].get_chemical_formula(),
            **({"id": ids[i]} if ids is not None else {}),
            "a_r": float(ref[i]),
            "a_r_pred": float(pred[i]),
        }
        for i in np.argsort(-np.abs(pred - ref))[:n]
    ]


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _run(command):
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), cwd=ROOT, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/anisonet_foundation.yaml")
    parser.add_argument("--name", default="foundation_log_spearman", help="accuracy.py run name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--members",
        default="auto",
        help="models shipped: auto (the ensemble when it measurably helps), 1, or "
        "the number of seeds",
    )
    parser.add_argument(
        "--runs", default=str(ROOT / "benchmarks" / "runs"), help="accuracy.py's run folders"
    )
    parser.add_argument(
        "--shipped", default=str(SHIPPED), help="folder of the shipped files (default: the package)"
    )
    args = parser.parse_args(argv)
    shipped = pathlib.Path(args.shipped).resolve()
    shipped.mkdir(parents=True, exist_ok=True)

    run = pathlib.Path(args.runs).resolve() / args.name
    summary = run / "accuracy.json"
    if not (summary.is_file() and json.loads(summary.read_text())["seeds"] == args.seeds):
        _run(
            [
                sys.executable,
                "-m",
                "benchmarks.accuracy",
                args.config,
                "--name",
                args.name,
                "--reuse",
                "--out",
                run.parent,
                "--seeds",
                *args.seeds,
            ]
        )
    accuracy = json.loads(summary.read_text())

    staged = []
    for seed in args.seeds:
        package = run / f"seed{seed}" / "model.nequip.zip"
        if not package.is_file():
            _run(["nequip-package", "build", run / f"seed{seed}" / "best.ckpt", package])
        staged.append(package)
    single = test_metrics(staged[:1])
    ensemble = test_metrics(staged)
    spread = {k: accuracy[f"{k}_std"] for k in KEYS[:2]}
    helps = all(ensemble[k] < accuracy[f"{k}_mean"] - spread[k] for k in KEYS[:2])
    members = {"auto": len(staged) if helps else 1, "1": 1}.get(args.members, len(staged))
    packages = staged[:members]
    metrics = ensemble if members > 1 else single

    names = [f"anisonet_foundation_seed{seed}.nequip.zip" for seed in args.seeds[:members]]
    for old in shipped.glob("*.nequip.zip"):
        if old.name not in names:
            old.unlink()
    for package, name in zip(packages, names):
        with atomic_file(shipped / name, force=True) as tmp:
            tmp.write_bytes(package.read_bytes())
    reference = build_reference(shipped / names[0], TRAIN_FILE, VAL_FILE)
    with atomic_file(shipped / shipped_reference_path().name, force=True) as tmp:
        reference.save(tmp)
    train = ase.io.read(TRAIN_FILE, ":")
    recipe = compose_config(ROOT / args.config, accuracy["overrides"])
    card = {
        "name": "aniso-nequip ready model: AnisoNet head on SevenNet-0 (frozen backbone)",
        "files": names,
        "sha256": {name: _sha256(shipped / name) for name in names},
        "ensemble": members > 1,
        "config": args.config,
        "overrides": accuracy["overrides"],
        "readout": recipe.readout,
        "checkpoint_selection": {"monitor": recipe.monitor, "mode": recipe.monitor_mode},
        "seeds": args.seeds[:members],
        "training_data": "datasets/mp_subset_train.extxyz.gz (883 crystals) with "
        "datasets/mp_subset_val.extxyz.gz (110) for checkpoint selection: Materials Project "
        "DFPT electronic dielectric tensors, CC-BY 4.0",
        "functional": "PBE (Materials Project); the backbone SevenNet-0 was trained on MPtrj "
        "(PBE/PBE+U)",
        "elements_trained_on": sorted(
            {s for a in train for s in a.get_chemical_symbols()}, key=ase.data.atomic_numbers.get
        ),
        "test_split": "datasets/mp_subset_test.extxyz.gz (111 crystals)",
        "test_metrics": metrics,
        "test_metrics_single_model": single,
        "test_metrics_ensemble": ensemble,
        "seed_spread": {
            "seeds": args.seeds,
            "std": spread,
            "mean": {k: accuracy[f"{k}_mean"] for k in KEYS[:2]},
        },
        "built": datetime.date.today().isoformat(),
        "machine": describe(),
    }
    with atomic_file(shipped / "model_card.json", force=True) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    with atomic_file(shipped / "MODEL_CARD.md", force=True) as tmp:
        tmp.write_text(model_card_markdown(card))
    print(json.dumps({k: card[k] for k in ("files", "ensemble", "test_metrics")}, indent=2))


def _row(label, metrics, keys=KEYS):
    return f"| {label} | " + " | ".join(f"{metrics[k]:.4f}" for k in keys) + " |"


def _experiment_section(result) -> str:
    """The card's "PBE vs experiment" section from ``benchmarks/experiment.py``'s result
    (``card["experiment"]``); empty without one."""
    if not result:
        return ""
    rows = result["crystals"]

    def indices(values):
        return " / ".join(f"{v:.3f}" for v in sorted(set(np.round(values, 3))))

    table = "\n".join(
        f"| {r['crystal']} | {r['optical_class']} | {r['eps_poly_experiment']:.2f} "
        f"({r['experiment_kind']}) | {r['eps_poly_predicted']:.2f} "
        f"| {100 * r['eps_poly_relative_error']:+.0f}% | {r['sign_experiment'] or ''} "
        f"| {r['sign_predicted'] or ''} | {indices(r['n_experiment'])} "
        f"| {indices(r['n_predicted'])} |"
        for r in rows
    )
    ranked = sorted(rows, key=lambda r: r["eps_poly_relative_error"])

    def listed(some):
        return ", ".join(f"{r['crystal']} {100 * r['eps_poly_relative_error']:+.0f}%" for r in some)

    return f"""
## PBE vs experiment

`python -m benchmarks.experiment` builds {result["n_crystals"]} well-known crystals from
experimental lattice constants and compares the model's predictions with measured values (the
script lists each value with its source; `n^2 at 589 nm` is the square of the sodium-D refractive
index, a few per cent above `eps_inf` by dispersion). The optical sign is right for
{result["signs_right"]} of {result["n_anisotropic"]} anisotropic crystals; the median
|relative error| of `eps_poly` is {100 * result["eps_poly_median_abs_relative_error"]:.0f}%
(median signed error {100 * result["eps_poly_median_relative_error"]:+.0f}%). Largest
overestimates: {listed(ranked[::-1][:3])}; largest underestimates: {listed(ranked[:3])}. The
deviations combine PBE's own (its too small band gaps raise `eps_inf`) with the model's errors
against PBE (the test errors above): the model reproduces PBE, not experiment.

| crystal | class | `eps_poly` exp. | pred. | error | sign exp. | pred. | `n` exp. | `n` pred. |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{table}
"""


def _discovery_section(summary) -> str:
    """The card's "Finding the most anisotropic crystals" section from the discovery benchmark
    (``card["discovery"]``, written by ``python -m benchmarks.discovery --card ROW``); empty
    without one."""
    if not summary:
        return ""

    def cells(part):
        return " | ".join(
            f"{part[k]['mean']:.3f} ± {part[k]['std']:.3f}"
            for k in ("spearman_a_r", "top_recall", "tail_a_r_mae", "eps_poly_mae")
        )

    worst = "\n".join(
        f"| {e['formula']} ({e['id']}) | {e['a_r']:.2f} | {e['a_r_pred']:.2f} |"
        for e in summary["largest_a_r_errors"]
    )
    runs = f"{len(summary['folds'])} folds x {len(summary['seeds'])} seed(s)"
    paired = summary.get("paired_vs_baseline")
    against = (
        "\nAgainst the recipe shipped before (row `baseline`: readout linear, selection by "
        "validation loss),\npaired on the same folds and seeds: "
        + ", ".join(
            f"{label} {paired[k]:+.3f}"
            for label, k in (
                ("Spearman `a_r`", "spearman_a_r"),
                ("top-5% recall", "top_recall"),
                ("tail MAE `a_r`", "tail_a_r_mae"),
                ("MAE `eps_poly`", "eps_poly_mae"),
            )
        )
        + ".\n"
        if paired
        else ""
    )
    return f"""
## Finding the most anisotropic crystals (discovery benchmark)

The figures that decide which model ships: `python -m benchmarks.discovery` trains this model's
recipe (row `{summary["row"]}`: {summary["what"]}) with 5-fold cross-validation over all
{summary["n_crystals"]} bundled `mp_subset` crystals, folds grouped by chemical system, and
predicts each crystal out of fold; the same models predict the bundled `phonondb` crystals
(PBEsol) that match no `mp_subset` crystal. Mean ± std over {runs}; top-5% recall is the share
of the 5% most anisotropic crystals found in the predicted top 5%, tail MAE the MAE of `a_r`
over crystals with `a_r >= 1.5`. The folds' models are not the shipped one (trained on the
bundled training split), but the same recipe.

| | Spearman `a_r` | top-5% recall | tail MAE `a_r` | MAE `eps_poly` |
| --- | --- | --- | --- | --- |
| `mp_subset`, out of fold | {cells(summary["mp"])} |
| `phonondb` (PBEsol) | {cells(summary["phonondb"])} |
{against}
The crystals whose out-of-fold `a_r` (seed {summary["seeds"][0]}) is furthest from DFPT's:

| crystal | `a_r` (DFPT) | `a_r` predicted out of fold |
| --- | --- | --- |
{worst}
"""


READOUTS = {
    "linear": "Cartesian readout",
    "square": "readout `eps = I + S S` (eigenvalues >= 1)",
    "log": "log-space readout `eps = I + expm(L)` (every eigenvalue above 1)",
    "local_field": "local-field readout (induced dipoles coupled by the Ewald dipole field)",
}


def _limits_of_the_readout(readout) -> str:
    if readout == "linear":
        return (
            "- Eigenvalues below 1 are unphysical for `eps_inf`; this model does not force them "
            "above 1\n  (`readout=square`, `log` or `local_field` in the configs do); "
            "`aniso-nequip screen` ranks such\n  predictions last."
        )
    return (
        f"- Every eigenvalue of a prediction is above 1, as `eps_inf`'s are (readout "
        f"`{readout}`), so no\n  prediction is unphysical in that way; an error of the tensor "
        "is still possible."
    )


def _selection(card) -> str:
    selection = card["checkpoint_selection"]
    if selection["monitor"].endswith("a_r_spearman"):
        return (
            "the epoch with the best validation Spearman of `a_r`\n  (`monitor: "
            f"{selection['monitor']}`), which ranks anisotropy best (the discovery benchmark)"
        )
    return f"the epoch with the best validation `{selection['monitor']}` ({selection['mode']})"


def model_card_markdown(card) -> str:
    m = card["test_metrics"]
    w = m["without_most_anisotropic"]
    mean, std = card["seed_spread"]["mean"], card["seed_spread"]["std"]
    seeds = card["seed_spread"]["seeds"]
    seeds_row = (
        f"| one model, mean ± std over seeds {seeds} | "
        + " | ".join(f"{mean[k]:.3f} ± {std[k]:.3f}" for k in KEYS[:2])
        + " | | |"
    )
    ensemble_row = _row(
        f"ensemble of the {len(seeds)} seeds' models", card["test_metrics_ensemble"]
    )
    systems = "\n".join(
        f"| {s} | {v['n']} | {v['eps_poly_mae']:.3f} | {v['anisotropy_ratio_mae']:.3f} |"
        for s, v in m["per_crystal_system"].items()
    )
    worst = "\n".join(
        f"| {e['formula']} | {e['a_r']:.2f} | {e['a_r_pred']:.2f} |"
        for e in m["largest_a_r_errors"]
    )
    if card["ensemble"]:
        kind = f"an ensemble of {len(card['files'])} models (seeds {card['seeds']})"
        mean_note = "The prediction is the members' mean tensor; their spread is its uncertainty."
    else:
        kind = f"one model (seed {card['seeds'][0]})"
        mean_note = (
            f"An ensemble of the {len(seeds)} seeds' models is not shipped: it does not beat one "
            "model on both MAEs by more than the spread between seeds (table below)."
        )
    elements = card["elements_trained_on"]
    return f"""# Model card: the aniso-nequip ready model

Predicts the electronic (high-frequency) dielectric tensor `eps_inf` of a crystal: a symmetric
3x3 tensor that obeys the crystal's point-group symmetry exactly (Neumann's principle).
Shipped as {kind}: `{"`, `".join(card["files"])}` (nequip packages; they load with nequip alone,
no SevenNet install needed). Used by default by `aniso-nequip predict`, `aniso_nequip.predict`,
`aniso_nequip.DielectricCalculator` and `aniso-nequip screen`. {mean_note}

- **Architecture**: `{card["config"]}`: SevenNet-0's element embedding and first 2 interaction
  blocks (frozen; symmetrised under inversion), one gated AnisoNet convolution
  (`l_max` 2, 32 channels), per-atom `0e+2e`, mean over atoms,
  {READOUTS[card["readout"]]}; the checkpoint is {_selection(card)}.
- **Training data**: {card["training_data"]}.
- **Functional**: {card["functional"]}.
- **Elements trained on** ({len(elements)}): {", ".join(elements)}.
  The model accepts SevenNet-0's 89 elements; for the others it has seen no dielectric data.
- **Built**: {card["built"]} by `python -m release.ship_model` (rebuilds it from scratch).

## Test errors (bundled `mp_subset` test split, 111 crystals)

| | MAE `eps_poly` | MAE `a_r` | MAE components | MAE eigenvalues |
| --- | --- | --- | --- | --- |
{_row("shipped model", m)}
{_row(f"without {w['left_out']} (the most anisotropic)", w)}
{seeds_row}
{ensemble_row}

Per crystal system:

| system | n | MAE `eps_poly` | MAE `a_r` |
| --- | --- | --- | --- |
{systems}

## Known limits

- Trained on 883 crystals: expect errors of the size above for crystals like the Materials
  Project's, larger for chemistries far from them.
- The most anisotropic crystals are the hardest: layered crystals (graphite, `a_r` 12 in the test
  split) get their anisotropy underestimated. The largest `a_r` errors on the test split:

| crystal | `a_r` (DFPT) | `a_r` predicted |
| --- | --- | --- |
{worst}

- Every prediction carries a domain score (distance to the nearest training crystal; above
  1.5 it is flagged `out_of_domain`: errors there are 2-4x larger; the documentation's
  "Applicability domain" page); solid neon, for one, is flagged.
{_limits_of_the_readout(card["readout"])}
- PBE underestimates band gaps and so overestimates `eps_inf`; the model reproduces PBE values,
  not experiment.
{_discovery_section(card.get("discovery"))}{_experiment_section(card.get("experiment"))}
## Licence

Training data: Materials Project, CC-BY 4.0 (cite the Materials Project and Petousis et al.,
Sci. Data 4, 160134 (2017)). SevenNet-0 weights: MIT (Park et al., J. Chem. Theory Comput. 20,
4857 (2024)). This model: MIT, as aniso-nequip.
"""


if __name__ == "__main__":
    main()
