"""Accuracy of a config on the bundled mp_subset split, mean and spread over seeds.

Trains CONFIG once per seed with nequip-train (train/val from the bundled split unless
overridden), evaluates the best checkpoint on the test split with nequip-evaluate's code, and
prints and writes JSON: per-seed and mean +- std of the test MAEs (eps_poly, a_r, components,
per crystal system), epochs, wall time and parameter count. 111 test crystals make single runs
noisy: report the seed spread.

    python benchmarks/accuracy.py configs/anisonet.yaml --seeds 0 1 2
    python benchmarks/accuracy.py configs/tiny.yaml --seeds 0 1 --max-minutes 2 max_epochs=3
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILE = "datasets/mp_subset_test.extxyz.gz"
KEYS = ("eps_poly_mae", "anisotropy_ratio_mae", "component_mae", "eigenvalue_mae")


def _train(config, seed, run_dir, max_minutes, overrides):
    command = [
        os.path.join(os.path.dirname(sys.executable), "nequip-train"),
        "-cn", os.path.relpath(config, ROOT), f"seed={seed}", f"hydra.run.dir={run_dir}",
        f"test_file={TEST_FILE}", *overrides,
    ]  # fmt: skip
    if max_minutes:
        minutes = int(max_minutes)
        command.append(f"+trainer.max_time=00:{minutes // 60:02d}:{minutes % 60:02d}:00")
    start = time.time()
    with open(run_dir / "train.out", "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-minutes", type=float, help="wall-time limit per training")
    parser.add_argument("--out", default="benchmarks/runs", help="run directories and JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. max_epochs=60")
    args = parser.parse_intermixed_args(argv)

    from aniso_nequip.inference import load_model
    from aniso_nequip.scripts.evaluate import evaluate

    config = pathlib.Path(args.config).resolve()
    out = (ROOT / args.out / config.stem).resolve()
    runs = []
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        wall = _train(config, seed, run_dir, args.max_minutes, args.overrides)
        ckpt = run_dir / "best.ckpt"
        metrics = evaluate(str(ckpt), [str(ROOT / TEST_FILE)], run_dir / "eval", force=True,
                           quiet=True)  # fmt: skip
        (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
        with open(metrics_csv) as f:
            epochs = sum(1 for row in csv.DictReader(f) if row.get("val0_epoch/weighted_sum"))
        params = sum(p.numel() for p in load_model(ckpt).parameters())
        runs.append({"seed": seed, "wall_s": round(wall, 1), "epochs": epochs,
                     "parameters": params, **{k: metrics[k] for k in KEYS},
                     "per_crystal_system": metrics["per_crystal_system"]})  # fmt: skip
        print(f"seed {seed}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in KEYS), flush=True)
    summary = {
        "config": str(config.relative_to(ROOT)),
        "overrides": args.overrides,
        "seeds": args.seeds,
        **{f"{k}_mean": float(np.mean([r[k] for r in runs])) for k in KEYS},
        **{f"{k}_std": float(np.std([r[k] for r in runs])) for k in KEYS},
        "runs": runs,
    }
    (out / "accuracy.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
