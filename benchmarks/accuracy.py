"""Accuracy of a config on the bundled mp_subset split, mean and spread over seeds.

Trains CONFIG once per seed with nequip-train (train/val from the bundled split unless
overridden), evaluates the best checkpoint on the test split with nequip-evaluate's code, and
prints and writes JSON: per-seed and mean +- std of the test MAEs (eps_poly, a_r, components,
per crystal system; also without the most anisotropic test crystal), the MAEs on the phonondb
test split less the crystals in the mp_subset training split (PBEsol: out of distribution), the
metrics of the seeds' mean prediction (an ensemble), epochs, best epoch, wall time and parameter
count. 111 test crystals make single runs
noisy: report the seed spread.

    python -m benchmarks.accuracy configs/anisonet.yaml --seeds 0 1 2
    python -m benchmarks.accuracy configs/anisonet_finetune.yaml --jobs 3 \
        --pretrain configs/anisonet_pretrain.yaml
    python -m benchmarks.accuracy configs/tiny.yaml --seeds 0 1 --max-minutes 2 max_epochs=3
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import ase.io
import numpy as np

from aniso_nequip.io import atomic_file
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILE = "datasets/mp_subset_test.extxyz.gz"
OOD_FILE = "datasets/phonondb_test.extxyz.gz"
KEYS = ("eps_poly_mae", "anisotropy_ratio_mae", "component_mae", "eigenvalue_mae")


def _max_time(minutes: float) -> str:
    seconds = int(round(minutes * 60))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    return f"{days:02d}:{hours:02d}:{seconds // 60:02d}:{seconds % 60:02d}"


def _train_command(config, seed, run_dir, max_minutes, overrides):
    command = [
        sys.executable,
        "-m",
        "nequip.scripts.train",
        "-cn",
        os.path.relpath(config, ROOT),
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    if max_minutes:
        command.append(f"+trainer.max_time={_max_time(max_minutes)}")
    return command


def _train_seed(args, config, seed, run_dir):
    """Train one seed (after its pre-training, with ``--pretrain``); returns the wall time.
    With ``--reuse``, a seed whose earlier training finished is not trained again."""
    wall_file = run_dir / "wall_s.txt"
    if args.reuse and wall_file.is_file() and (run_dir / "best.ckpt").is_file():
        return float(wall_file.read_text())
    start = time.time()
    overrides = [f"test_file={TEST_FILE}", *args.overrides]
    if args.pretrain:
        pre_dir = run_dir / "pretrain"
        pre_dir.mkdir(parents=True, exist_ok=True)
        command = _train_command(args.pretrain, seed, pre_dir, args.max_minutes, args.overrides)
        _run(command, pre_dir / "train.out")
        overrides.append(f"pretrained={pre_dir / 'best.ckpt'}")
    command = _train_command(config, seed, run_dir, args.max_minutes, overrides)
    _run(command, run_dir / "train.out")
    wall = time.time() - start
    wall_file.write_text(f"{wall:.1f}")
    return wall


def _run(command, log_path):
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}): {log_path}")


def _epochs(run_dir):
    """Validation epochs run and the best one (lowest validation loss, counted from 1)."""
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(metrics_csv) as f:
        losses = [
            float(r["val0_epoch/weighted_sum"])
            for r in csv.DictReader(f)
            if r.get("val0_epoch/weighted_sum")
        ]
    return len(losses), int(np.argmin(losses)) + 1


def without_most_anisotropic(reference, predicted):
    """``(index, MAEs)``: the crystal with the largest reference a_r (graphite, a_r 12 in the
    bundled test split) and the MAEs (:data:`KEYS`) without it, so that one crystal does not
    decide a comparison."""
    from aniso_nequip.metrics import derived, tensor_metrics

    drop = int(np.nanargmax(derived(reference)["a_r"]))
    keep = np.arange(len(reference)) != drop
    metrics = tensor_metrics(reference[keep], predicted[keep], ["-"] * int(keep.sum()))
    return drop, {k: metrics[k] for k in KEYS}


def _without_most_anisotropic(eval_dir):
    """:func:`without_most_anisotropic` of an evaluation's predictions."""
    from aniso_nequip.data.matching import crystal_id
    from aniso_nequip.data.validation import reference_tensor

    frames = ase.io.read(eval_dir / "predictions.extxyz", ":")
    reference = np.stack([reference_tensor(a) for a in frames])
    predicted = np.stack([np.reshape(a.info["dielectric_tensor_pred"], (3, 3)) for a in frames])
    drop, metrics = without_most_anisotropic(reference, predicted)
    return {
        "left_out": f"{crystal_id(frames[drop])} ({frames[drop].get_chemical_formula()})",
        **metrics,
    }


def _ood_file(out):
    """The phonondb test split (PBEsol) less the crystals that are also in the mp_subset
    training split (matched by id, else by structure): an out-of-distribution check."""
    from aniso_nequip.data.matching import StructureIndex

    path = out / "phonondb_test_not_in_mp_train.extxyz"
    if not path.is_file():
        index = StructureIndex(ase.io.read(ROOT / "datasets/mp_subset_train.extxyz.gz", ":"))
        frames = [a for a in ase.io.read(ROOT / OOD_FILE, ":") if a not in index]
        with atomic_file(path, force=True) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
    return path


def _evaluate_seed(seed, run_dir, wall, ood_file):
    from aniso_nequip.evaluation import evaluate
    from aniso_nequip.inference import load_model

    ckpt = run_dir / "best.ckpt"
    metrics = evaluate(str(ckpt), [str(ROOT / TEST_FILE)], run_dir / "eval", force=True, quiet=True)
    ood = evaluate(str(ckpt), [str(ood_file)], run_dir / "eval_phonondb", force=True, quiet=True)
    epochs, best_epoch = _epochs(run_dir)
    params = sum(p.numel() for p in load_model(ckpt).parameters())
    trainable = sum(p.numel() for p in load_model(ckpt).parameters() if p.requires_grad)
    print(f"seed {seed}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in KEYS), flush=True)
    return {
        "seed": seed,
        "wall_s": round(wall, 1),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "parameters": params,
        "trainable_parameters": trainable,
        **{k: metrics[k] for k in KEYS},
        "without_most_anisotropic": _without_most_anisotropic(run_dir / "eval"),
        "phonondb_ood": {"n": ood["n"], **{k: ood[k] for k in KEYS}},
        "per_crystal_system": metrics["per_crystal_system"],
    }


def _spread(runs, get):
    values = [get(r) for r in runs]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _ensemble(run_dirs):
    """Test metrics of the mean prediction of the seeds' models (an ensemble)."""
    from aniso_nequip.data.symmetry import crystal_system
    from aniso_nequip.data.validation import reference_tensor
    from aniso_nequip.inference import ensemble_mean
    from aniso_nequip.metrics import tensor_metrics

    per_seed = [ase.io.read(d / "eval" / "predictions.extxyz", ":") for d in run_dirs]
    members = np.array([[a.info["dielectric_tensor_pred"] for a in frames] for frames in per_seed])
    mean = ensemble_mean(members)
    frames = per_seed[0]
    reference = np.stack([reference_tensor(a) for a in frames])
    metrics = tensor_metrics(reference, mean.reshape(-1, 3, 3), [crystal_system(a) for a in frames])
    return {k: metrics[k] for k in KEYS}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--pretrain",
        help="config to pre-train with first (its best checkpoint is passed to CONFIG as "
        "`pretrained`); overrides apply to both",
    )
    parser.add_argument("--max-minutes", type=float, help="wall-time limit per training")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at the same time")
    parser.add_argument("--name", help="name of the run (default: the config's)")
    parser.add_argument(
        "--reuse", action="store_true", help="keep seeds whose training finished in an earlier run"
    )
    parser.add_argument("--out", default="benchmarks/runs", help="run directories and JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. max_epochs=60")
    args = parser.parse_intermixed_args(argv)

    config = pathlib.Path(args.config).resolve()
    if args.pretrain:
        args.pretrain = pathlib.Path(args.pretrain).resolve()
    out = (ROOT / args.out / (args.name or config.stem)).resolve()
    run_dirs = {seed: out / f"seed{seed}" for seed in args.seeds}
    for run_dir in run_dirs.values():
        run_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        walls = dict(
            zip(
                args.seeds,
                pool.map(lambda seed: _train_seed(args, config, seed, run_dirs[seed]), args.seeds),
            )
        )
    ood_file = _ood_file(out)
    runs = [_evaluate_seed(seed, run_dirs[seed], walls[seed], ood_file) for seed in args.seeds]
    summary = {
        "name": args.name or config.stem,
        "config": str(config.relative_to(ROOT)),
        "pretrain": str(args.pretrain.relative_to(ROOT)) if args.pretrain else None,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "machine": describe(),
        **{f"{k}_mean": float(np.mean([r[k] for r in runs])) for k in KEYS},
        **{f"{k}_std": float(np.std([r[k] for r in runs])) for k in KEYS},
        "without_most_anisotropic": {
            k: _spread(runs, lambda r: r["without_most_anisotropic"][k]) for k in KEYS[:2]
        },
        "phonondb_ood": {k: _spread(runs, lambda r: r["phonondb_ood"][k]) for k in KEYS[:2]},
        "ensemble": _ensemble(list(run_dirs.values())) if len(runs) > 1 else None,
        "runs": runs,
    }
    with atomic_file(out / "accuracy.json", force=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
