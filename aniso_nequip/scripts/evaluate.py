"""``nequip-evaluate``: metrics, predictions and parity plots of a trained model on extxyz files."""

import argparse
import csv
import json
import os
import pathlib
import sys
from typing import List

import ase.io
import numpy as np
from nequip.data import AtomicDataDict
from nequip.data._key_registry import get_field_type

from .._keys import DIELECTRIC_IONIC_KEY
from ..data.files import read_frames
from ..data.matching import ID_KEYS, crystal_id
from ..data.symmetry import crystal_system
from ..inference import ModelLoadError, load_model, predict, unknown_elements
from ..io import OutputExistsError, staged_output_dir
from ..metrics import derived, metrics_table, reference_tensor, tensor_metrics
from ..plots import parity_heatmap

EXAMPLES = """examples:
  nequip-evaluate --model outputs/2026-11-26/12-00-00/best.ckpt \\
      --data datasets/mp_subset_test.extxyz.gz --out eval/mp_test
  nequip-evaluate --model model.nequip.zip --data a.extxyz b.extxyz --out eval/ab --device cuda

writes into OUT: predictions.extxyz (inputs + info["<field>_pred"]), predictions.csv,
metrics.json, metrics.md, parity_eps_poly.png, parity_anisotropy_ratio.png
"""

_EPS = AtomicDataDict.DIELECTRIC_KEY
_IONIC = DIELECTRIC_IONIC_KEY
_BORN = AtomicDataDict.BORN_CHARGE_KEY


class InputError(ValueError):
    """Bad input data (missing/unreadable/empty file, unknown elements)."""


def _read_frames(paths: List[str]):
    frames, origin = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"data file `{path}` does not exist")
        if os.path.getsize(path) == 0:
            raise InputError(f"data file `{path}` contains no frames")
        try:
            these = read_frames(path)
        except Exception as err:
            raise InputError(f"cannot read `{path}`: {type(err).__name__}: {err}") from err
        if len(these) == 0:
            raise InputError(f"data file `{path}` contains no frames")
        frames += these
        origin += [(path, i) for i in range(len(these))]
    return frames, origin


def _head_metrics(frames, outputs, systems):
    """Metrics of the heads beyond the electronic tensor, on the frames that have references."""
    out = {}
    if _IONIC in outputs:
        refs = [a.info.get(_IONIC) for a in frames]
        keep = [
            i
            for i, r in enumerate(refs)
            if r is not None and reference_tensor(frames[i]) is not None
        ]
        if keep:
            ionic_ref = np.stack([np.reshape(refs[i], (3, 3)) for i in keep])
            ionic_pred = outputs[_IONIC][keep]
            kept_systems = [systems[i] for i in keep]
            out[_IONIC] = tensor_metrics(ionic_ref, ionic_pred, kept_systems)
            electronic_ref = np.stack([reference_tensor(frames[i]) for i in keep])
            out["static"] = tensor_metrics(
                electronic_ref + ionic_ref, outputs[_EPS][keep] + ionic_pred, kept_systems
            )
    if _BORN in outputs:
        pairs = [
            (np.reshape(a.calc.results[_BORN], (-1, 3, 3)), z)
            for a, z in zip(frames, outputs[_BORN])
            if a.calc is not None and _BORN in a.calc.results
        ]
        if pairs:
            ref = np.concatenate([r for r, _ in pairs])
            pred = np.concatenate([p for _, p in pairs])
            iso = np.abs(np.trace(pred, axis1=1, axis2=2) - np.trace(ref, axis1=1, axis2=2)) / 3
            out[_BORN] = {
                "n_atoms": int(len(ref)),
                "component_mae": float(np.abs(pred - ref).mean()),
                "isotropic_mae": float(iso.mean()),
            }
    return out


def _identifier(atoms, index):
    return crystal_id(atoms, (*ID_KEYS, "mp_id", "id")) or str(index)


def evaluate(model_path, data_paths, out, batch_size=32, device="cpu", force=False, quiet=False):
    """Run the evaluation and write the outputs; returns the metrics dict."""
    frames, origin = _read_frames(data_paths)
    model = load_model(model_path, device)
    missing = unknown_elements(frames, model.type_names)
    if missing:
        listed = "\n".join(
            f"  {origin[i][0]} frame {origin[i][1]} ({frames[i].get_chemical_formula()}): "
            f"{', '.join(els)}"
            for i, els in missing.items()
        )
        raise InputError(
            f"{len(missing)} frame(s) contain elements the model was not trained on "
            f"(model types: {len(model.type_names)} elements):\n{listed}"
        )

    outputs = predict(frames, model, batch_size, device, field="all", progress=not quiet)
    pred = outputs[_EPS]
    refs = [reference_tensor(a) for a in frames]
    has_ref = np.array([r is not None for r in refs])
    systems = [crystal_system(a) for a in frames]
    pred_d = derived(pred)

    with staged_output_dir(out, force=force) as stage:
        annotated = []
        for i, atoms in enumerate(frames):
            atoms = atoms.copy()
            atoms.calc = frames[i].calc
            for field, values in outputs.items():
                value = np.asarray(values[i])
                if get_field_type(field) == "node":
                    atoms.arrays[f"{field}_pred"] = value.reshape(len(atoms), -1)
                else:
                    atoms.info[f"{field}_pred"] = value.reshape(-1)
            annotated.append(atoms)
        ase.io.write(stage / "predictions.extxyz", annotated, format="extxyz")

        ref_d = derived(np.stack([r if r is not None else np.eye(3) for r in refs]))
        with open(stage / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            header = ["file", "frame", "id", "formula", "crystal_system", "n_atoms"]
            for which in ("ref", "pred"):
                header += [f"eps_poly_{which}", f"a_r_{which}"]
                header += [f"eigenvalue{k}_{which}" for k in (1, 2, 3)]
            writer.writerow(header)
            for i, atoms in enumerate(frames):
                row = [
                    origin[i][0],
                    origin[i][1],
                    _identifier(atoms, i),
                    atoms.get_chemical_formula(),
                    systems[i],
                    len(atoms),
                ]
                for d, present in ((ref_d, has_ref[i]), (pred_d, True)):
                    values = [d["eps_poly"][i], d["a_r"][i], *d["eigenvalues"][i]]
                    row += [f"{v:.6f}" if present else "" for v in values]
                writer.writerow(row)

        n_without = int((~has_ref).sum())
        if has_ref.any():
            reference = np.stack([r for r in refs if r is not None])
            metrics = tensor_metrics(
                reference, pred[has_ref], [s for s, h in zip(systems, has_ref) if h]
            )
        else:
            metrics = {"n": 0}
        metrics["n_without_reference"] = n_without
        metrics.update(_head_metrics(frames, outputs, systems))
        metrics["model"] = str(model_path)
        metrics["data"] = [str(p) for p in data_paths]
        with open(stage / "metrics.json", "w") as f:
            json.dump(metrics, f, indent=2)

        note = (
            f"{n_without} frame(s) without a reference tensor got predictions but are left out "
            "of the metrics.\n"
            if n_without
            else ""
        )
        table = metrics_table(metrics) if has_ref.any() else "No reference tensors: no metrics.\n"
        for head in ("dielectric_ionic_tensor", "static"):
            if head in metrics:
                table += f"\n{head}:\n\n" + metrics_table(metrics[head])
        if _BORN in metrics:
            born = metrics[_BORN]
            table += (
                f"\nborn_effective_charges ({born['n_atoms']} atoms): component MAE "
                f"{born['component_mae']:.4f}, isotropic-part MAE {born['isotropic_mae']:.4f}\n"
            )
        report = f"# nequip-evaluate\n\nmodel: `{model_path}`\n\n{table}\n{note}"
        (stage / "metrics.md").write_text(report)
        if has_ref.any():
            parity_heatmap(
                ref_d["eps_poly"][has_ref],
                pred_d["eps_poly"][has_ref],
                "eps_poly",
                stage / "parity_eps_poly.png",
            )
            parity_heatmap(
                ref_d["a_r"][has_ref],
                pred_d["a_r"][has_ref],
                "a_r",
                stage / "parity_anisotropy_ratio.png",
            )
    if not quiet:
        print(table + note, end="")
        print(f"wrote {pathlib.Path(out)}/")
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nequip-evaluate",
        description="Evaluate a trained dielectric-tensor model (checkpoint or nequip-package).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="training checkpoint (.ckpt) or .nequip.zip")
    parser.add_argument(
        "--data", required=True, nargs="+", help="extxyz (.gz allowed) or .h5 file(s)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    try:
        evaluate(args.model, args.data, args.out, args.batch_size, args.device, args.force)
    except (InputError, ModelLoadError, OutputExistsError) as err:
        print(f"nequip-evaluate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
