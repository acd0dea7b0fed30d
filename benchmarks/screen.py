"""Screening throughput (``aniso-nequip screen``) on a 2,000-structure pool on CPU.

The pool is the bundled phonon database (1,369 crystals) topped up with rattled copies to
``--n`` structures, screened against the bundled ``mp_subset`` training split as in the README's
screening command. Prints one JSON object: structures/s with and without the structural
dimensionality (the whole run: reading, filters and training-set matching, symmetry, prediction,
outputs and plots), the time spent predicting and classifying dimensionality, and the peak
resident memory after screening ``--n / 4`` structures and after ``--n`` (streaming: the second
should not be 4x the first). Not a test: figures depend on the machine.

    python benchmarks/screen.py                      # a 1-epoch paper-config model, trained here
    python benchmarks/screen.py --model outputs/anisonet/best.ckpt --n 2000 --batch-size 64
"""

import argparse
import json
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import ase.io
import numpy as np
import torch

from aniso_nequip.screen.layout import Settings
from aniso_nequip.screen.runner import screen

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
PHONONDB = [DATASETS / f"phonondb_{split}.extxyz.gz" for split in ("train", "val", "test")]
TRAINING = DATASETS / "mp_subset_train.extxyz.gz"


def _paper_model(tmp: pathlib.Path) -> pathlib.Path:
    """A paper-sized model (``configs/anisonet.yaml``) trained for one epoch on 48 crystals:
    screening speed does not depend on the weights."""
    files = {}
    for split in ("train", "val"):
        files[split] = tmp / f"{split}.extxyz"
        ase.io.write(files[split], ase.io.read(DATASETS / f"mp_subset_{split}.extxyz.gz", ":48"))
    subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "nequip-train"),
            "-cn",
            "configs/anisonet.yaml",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['val']}",
            "max_epochs=1",
            "run=[train]",
            f"hydra.run.dir={tmp / 'run'}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return tmp / "run" / "best.ckpt"


def _pool(path: pathlib.Path, n: int) -> None:
    frames = [a for p in PHONONDB for a in ase.io.iread(p, ":")]
    rng = np.random.default_rng(0)
    copies = []
    for i in range(n - len(frames)):
        atoms = frames[i % len(frames)].copy()
        atoms.rattle(0.02, seed=int(rng.integers(2**31)))
        atoms.info["entry_id"] = f"{atoms.info['entry_id']}-rattled-{i}"
        copies.append(atoms)
    ase.io.write(path, (frames + copies)[:n], format="extxyz")


def _screen(model, pool, out, dimensionality, batch_size):
    settings = Settings(
        models=[str(model)],
        structures=[str(pool)],
        exclude=[str(TRAINING)],
        dimensionality=dimensionality,
    )
    start = time.perf_counter()
    summary = screen(out, settings, device="cpu", batch_size=batch_size, progress=False).summary
    seconds = time.perf_counter() - start
    return {
        "structures": summary["read"],
        "screened": summary["predicted"],
        "seconds": round(seconds, 1),
        "structures_per_s": round(summary["read"] / seconds, 1),
        "predict_seconds": round(summary["seconds"]["predict"], 1),
        "dimensionality_seconds": round(summary["seconds"]["dimensionality"], 1)
        if dimensionality
        else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint or package (default: train a paper-size one)")
    parser.add_argument("--n", type=int, default=2000, help="pool size (default 2000)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model = pathlib.Path(args.model) if args.model else _paper_model(tmp)
        pools = {n: tmp / f"pool_{n}.extxyz" for n in (args.n // 4, args.n)}
        for n, path in pools.items():
            _pool(path, n)
        quarter = _screen(model, pools[args.n // 4], tmp / "quarter", False, args.batch_size)
        without = _screen(model, pools[args.n], tmp / "without", False, args.batch_size)
        with_dim = _screen(model, pools[args.n], tmp / "with", True, args.batch_size)
    result = {
        "model": str(args.model or "configs/anisonet.yaml (1 epoch)"),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "without_dimensionality": without,
        "with_dimensionality": with_dim,
        "peak_rss_mb_quarter_pool": quarter["peak_rss_mb"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
