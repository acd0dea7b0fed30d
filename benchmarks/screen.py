"""Screening a large pool (``aniso-nequip screen``) with the ready model, on CPU threads.

Writes a synthetic pool of ``--n`` structures (default 20,000) made from the bundled
``mp_subset`` crystals (all splits, in a random order): rattled copies (0.01-0.03 A), every other
one of a 2x1x1 supercell where that stays within the 39-site filter, without tensors or metadata
as a pool of candidates would be, into ``--cache`` (reused by later runs; nothing is shipped).
Then screens, each in its own process and as a user would (the CLI, one shard, the ready model,
no training-set exclusion: a rattled copy of a training crystal would match it, so ``--exclude
mp_subset_train`` would remove 80% of this pool, where it removes few of a real one):

the first ``--small`` structures and the whole pool, as the command runs by default (the
dimensionality step classifies the ranked top 50 only, at the merge): structures/s and peak
resident memory of each (flat in pool size: streaming), and the wall time extrapolated to 150,000
crystals from the slope between the two runs (start-up, model loading and the top's
dimensionality counted once).

``--compiled`` screens with the ready model compiled by ``nequip-compile --mode aotinductor
--target batch_dielectric`` (written into ``--cache`` once; the centrosymmetric skip included;
a compiled model gives no domain score). The rattled copies have no inversion centre, so no
crystal of this pool skips the inverted pass (real pools: about half of the MP crystals).

Prints one JSON object; ``--out DIR`` also writes it to ``DIR/screen_cpu.json`` (``screen_gpu``
with ``--device cuda``) for ``benchmarks/results.py``. Timings depend on the machine and on what
else runs on it. Not a test.

    python -m benchmarks.screen                         # 20,000 structures, 2 threads
    python -m benchmarks.screen --n 2000 --small 500     # a quick look
    python -m benchmarks.screen --out benchmarks/runs/  # keep the figures for RESULTS.md
    python -m benchmarks.screen --compiled --out benchmarks/runs/ --tag _compiled
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import ase
import ase.io
import numpy as np

from aniso_nequip.io import atomic_file
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "datasets" / f"mp_subset_{split}.extxyz.gz" for split in ("train", "val", "test")]
MAX_SITES = 39  # the default --max-sites filter
TARGET = 150_000
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))


def write_pool(path: pathlib.Path, n: int, seed: int = 0) -> None:
    """Write the synthetic pool of ``n`` structures to ``path`` (atomically, frame by frame)."""
    bases = [a for source in SOURCES for a in ase.io.iread(source, ":")]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bases))  # any prefix of the pool is a sample of all of it
    with atomic_file(path, force=True) as tmp:
        with open(tmp, "w") as f:
            for i in range(n):
                base = bases[order[i % len(bases)]]
                atoms = ase.Atoms(base.symbols, base.positions, cell=base.cell, pbc=True)
                if i % 2 and 2 * len(atoms) <= MAX_SITES:
                    atoms = atoms.repeat((2, 1, 1))
                atoms.rattle(rng.uniform(0.01, 0.03), seed=int(rng.integers(2**31)))
                atoms.info["entry_id"] = f"{base.info['entry_id']}-synthetic-{i}"
                ase.io.write(f, atoms, format="extxyz")


def pool(n: int, cache: pathlib.Path) -> pathlib.Path:
    """The cached pool of ``n`` structures, written when missing."""
    path = cache / f"pool-v2-{n}.extxyz"  # v2: the mix of supercells of every prefix
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing the synthetic pool {path}", file=sys.stderr)
        write_pool(path, n)
    return path


def compiled_model(cache: pathlib.Path, threads: int) -> pathlib.Path:
    """The ready model compiled for batches on CPU (``nequip-compile``), written when missing."""
    from aniso_nequip.pretrained import model_paths

    (package,) = model_paths()
    path = cache / f"{pathlib.Path(package).name.split('.')[0]}.nequip.pt2"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"compiling the ready model into {path}", file=sys.stderr)
        command = [
            str(pathlib.Path(sys.executable).parent / "nequip-compile"),
            str(package),
            str(path),
            "--mode",
            "aotinductor",
            "--device",
            "cpu",
            "--target",
            "batch_dielectric",
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return path


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_screen(structures, out, args) -> dict:
    """Run ``aniso-nequip screen`` in its own process; its figures from ``summary.json``."""
    command = [
        str(pathlib.Path(sys.executable).parent / "aniso-nequip"),
        "screen",
        "--structures",
        str(structures),
        "--out",
        str(out),
        "--quiet",
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
    ]
    command += ["--model", args.model] if args.model else []
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    start, cpu = time.perf_counter(), _children_cpu_s()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    summary = json.loads((pathlib.Path(out) / "summary.json").read_text())
    return {
        "structures": summary["read"],
        "ranked": summary["ranked"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "structures_per_s": round(summary["read"] / wall, 1),
        "predict_s": round(summary["seconds"]["predict"], 1),
        "dimensionality_s": round(summary["seconds"]["dimensionality"], 1),
        "peak_rss_mb": summary["peak_rss_mb"],
    }


def measure(args) -> dict:
    """Screen the small pool and the whole pool; extrapolate."""
    cache = pathlib.Path(args.cache)
    load = os.getloadavg()[0]
    if args.compiled:
        args.model = str(compiled_model(cache, args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        small = run_screen(pool(args.small, cache), f"{tmp}/small", args)
        whole = run_screen(pool(args.n, cache), f"{tmp}/whole", args)
    per_structure = (whole["wall_s"] - small["wall_s"]) / (args.n - args.small)
    minutes = (small["wall_s"] + (TARGET - args.small) * per_structure) / 60
    # on a shared machine: CPU seconds spread over the threads (an estimate for an idle machine)
    cpu_per_structure = (whole["cpu_s"] - small["cpu_s"]) / (args.n - args.small)
    cpu_minutes = (small["cpu_s"] + (TARGET - args.small) * cpu_per_structure) / args.threads / 60
    return {
        "model": args.model or "ready model (aniso_nequip/pretrained)",
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "pool": f"{args.n} rattled copies / 2x1x1 supercells of the bundled mp_subset crystals",
        "load_average": round(max(load, os.getloadavg()[0]), 1),  # before / after: contention
        "dimensionality": "top 50 only, at the merge",
        "small_pool": small,
        "whole_pool": whole,
        # None: the whole pool took no longer than the small one (other jobs slowed the small)
        "steady_structures_per_s": round(1 / per_structure, 1) if per_structure > 0 else None,
        "extrapolated_150k_min": round(minutes, 1) if per_structure > 0 else None,
        "cpu_s_per_structure": round(cpu_per_structure, 4),
        "extrapolated_150k_min_from_cpu_time": round(cpu_minutes, 1),
        "memory_ratio_whole_to_small": round(whole["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }


def table(result: dict) -> str:
    """Markdown table of one :func:`measure` result (for ``benchmarks/results.py``)."""
    lines = [
        "| run | structures | wall (s) | CPU (s) | structures/s | peak RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    runs = [("small_pool", "small pool"), ("whole_pool", "whole pool")]
    if "dimensionality_sample" in result:  # runs from before the top-only dimensionality step
        runs = [
            ("small_pool", "small pool, no dimensionality"),
            ("whole_pool", "whole pool, no dimensionality"),
            ("dimensionality_sample", "sample with dimensionality"),
        ]
    for name, what in runs:
        r = result[name]
        lines.append(
            f"| {what} | {r['structures']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['structures_per_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    old = "dimensionality_sample" in result
    with_dims = (
        f", {result['extrapolated_150k_min_with_dimensionality']:.0f} min with it" if old else ""
    )
    cpu_dims = (
        f", {result['extrapolated_150k_min_from_cpu_time_with_dimensionality']:.0f} "
        "min with the dimensionality step"
        if old
        else ""
    )
    dims = "without the dimensionality step" if old else "dimensionality of the top 50 included"
    steady = (
        "not measurable (the small pool ran slower than the whole one: contention)"
        if result["steady_structures_per_s"] is None
        else f"{result['steady_structures_per_s']:.1f} structures/s; 150,000 crystals: "
        f"**{result['extrapolated_150k_min']:.0f} min** {dims}{with_dims}"
    )
    lines += [
        "",
        f"Model: {result['model']}; {result['threads']} threads, batch {result['batch_size']}, "
        f"{result['device']}; load average {result['load_average']} during the run (the "
        f"benchmark alone: about {result['threads']}). Pool: {result['pool']}. Steady rate "
        f"{steady}; dimensionality: {result.get('dimensionality', 'every crystal')}; peak memory "
        f"of the whole pool / the small one: {result['memory_ratio_whole_to_small']:.2f}. "
        f"From CPU time ({result['cpu_s_per_structure'] * 1000:.0f} ms per structure, spread "
        f"over {result['threads']} threads: an estimate for a machine to itself, itself "
        "inflated by contention): "
        f"{result['extrapolated_150k_min_from_cpu_time']:.0f} min{cpu_dims}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint or package (default: the ready model)")
    parser.add_argument("--n", type=int, default=20_000, help="pool size (default 20,000)")
    parser.add_argument("--small", type=int, default=2_000, help="small pool size (2,000)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="the ready model compiled with AOTInductor (no domain score)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cache",
        default=str(CACHE / "aniso-nequip" / "screen-benchmark"),
        help="where the synthetic pools are written and reused",
    )
    parser.add_argument("--out", help="folder for screen_<device><tag>.json (benchmarks/runs/)")
    parser.add_argument("--tag", default="", help="ends the JSON file's name, e.g. _top_dims")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.n:
        parser.error("needs 0 < --small < --n")
    result = {"machine": describe(), "results": measure(args)}
    print(json.dumps(result, indent=2))
    if args.out:
        path = pathlib.Path(args.out) / f"screen_{args.device.split(':')[0]}{args.tag}.json"
        with atomic_file(path, force=True) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
