"""Inference speed of the shipped ready model, today's code path against the new one, lever by
lever (run by ``benchmarks/speed.py --foundation``, each configuration in this one process).

Every row runs the ready model as shipped before these levers (extracted from git at
``BASELINE_COMMIT``; the ready model of 2026-12-01 has the same backbone and head, its readout
``log`` instead of ``linear``), so each predicts what ``today`` does. Rows, each adding one lever
to the one before: ``today`` (that package with its own interned code), ``radial weights once``
(its weights in the current model code, both passes as before but the radial network run once
for a crystal and its inverse image), ``shared first block`` (the inverse image's first block is
the crystal's with signs flipped), ``centrosymmetric skip`` (``inversion_partner``: crystals with
an inversion centre skip the inverted pass), ``aotinductor`` (the current model exported as
``nequip-compile --mode aotinductor --target batch_dielectric`` does it, given no
``inversion_partner``: the first two levers only) and ``aotinductor + centrosymmetric skip`` (the
same compiled file given the partners, as ``aniso_nequip.predict`` gives them). Throughput counts
graph building (neighbour list, inversion partners) and the forward pass, as
``aniso_nequip.predict`` does;
``max_rel_diff`` is the largest difference of a predicted tensor from today's, relative to the
tensor's largest component.
"""

import pathlib
import subprocess
import tempfile
import time

import numpy as np
import torch
from nequip.data import AtomicDataDict

from aniso_nequip.data import atoms_to_graphs, read_frames
from aniso_nequip.data.graphs import INVERSION_PARTNER_KEY

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = "aniso_nequip/pretrained/anisonet_foundation_seed0.nequip.zip"
BASELINE_COMMIT = "78c9cd9"  # the last commit before the feature cache and inference levers
LEVERS = (
    "today",
    "radial weights once",
    "shared first block",
    "centrosymmetric skip",
    "aotinductor",
    "aotinductor + centrosymmetric skip",
)


def baseline_package(directory: pathlib.Path) -> pathlib.Path:
    """The shipped package as it was at ``BASELINE_COMMIT`` (today's code path)."""
    path = directory / "baseline.nequip.zip"
    blob = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:{SHIPPED}"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path.write_bytes(blob)
    return path


def rebuilt(package: pathlib.Path):
    """The package's model built by the current code from the package's own config, with its
    weights (what ``release/repackage.py`` ships)."""
    from hydra.utils import instantiate

    from aniso_nequip.saved_models import model_config
    from release.repackage import load_package_weights

    model = instantiate(model_config(package))
    load_package_weights(model, package)
    return model.eval()


def _aot(model, frames, directory):
    from aniso_nequip.inference import load_model
    from benchmarks.speed import aot_export

    path = directory / "model.nequip.pt2"
    example = atoms_to_graphs(frames[:1], model.type_names, float(model.metadata["r_max"]))
    aot_export(model, example, "cpu", path)
    return load_model(path)


def _run(model, frames, batch_size, partners):
    """Predicted tensors and seconds taken, graph building included."""
    r_max, names = float(model.metadata["r_max"]), list(model.type_names)
    out, start = [], time.perf_counter()
    for i in range(0, len(frames), batch_size):
        graphs = atoms_to_graphs(frames[i : i + batch_size], names, r_max, with_references=False)
        if not partners:
            graphs.pop(INVERSION_PARTNER_KEY)
        with torch.no_grad():
            out.append(model(graphs)[AtomicDataDict.DIELECTRIC_KEY].double().numpy())
    return np.concatenate(out), time.perf_counter() - start


def measure_levers(batch_size: int, num_structures: int, warmup: int = 2, levers=LEVERS):
    """Structures/s and deviation from today's predictions of each row of ``levers`` (of
    :data:`LEVERS`, in that order, starting with today's path)."""
    from nequip.utils.global_state import set_global_state

    from aniso_nequip.inference import load_model

    set_global_state()
    frames = read_frames(str(ROOT / "datasets" / "mp_subset_train.extxyz.gz"))[:num_structures]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        package = baseline_package(tmp)
        today, new = load_model(package), rebuilt(package)
        backbone = new.model.backbone
        rows, reference, compiled = [], None, None
        for lever in levers:
            model, partners = new, lever.endswith("centrosymmetric skip")
            backbone.share_first_layer = lever not in ("today", "radial weights once")
            if lever == "today":
                model = today
            elif lever.startswith("aotinductor"):
                compiled = compiled or _aot(new, frames, tmp)
                model = compiled
            if warmup:
                _run(model, frames[: warmup * batch_size], batch_size, partners)
            predicted, seconds = _run(model, frames, batch_size, partners)
            if reference is None:
                reference = predicted
            scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
            rows.append(
                {
                    "lever": lever,
                    "batch_size": batch_size,
                    "structures": len(frames),
                    "structures_per_s": round(len(frames) / seconds, 2),
                    "max_rel_diff": float(np.max(np.abs(predicted - reference) / scale)),
                }
            )
    centrosymmetric = sum(
        bool((atoms_to_graphs([a], new.type_names, 5.0)[INVERSION_PARTNER_KEY] >= 0).all())
        for a in frames
    )
    for row in rows:
        row["centrosymmetric_fraction"] = round(centrosymmetric / len(frames), 3)
    return rows
