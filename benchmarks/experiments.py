"""The accuracy experiments behind benchmarks/RESULTS.md: the paper's ablations and each idea.

Every experiment is one ``benchmarks/accuracy.py`` run (train on the bundled mp_subset split,
evaluate its test split) under the same wall-time budget, so ideas are compared at equal time.
``configs/anisonet_best.yaml`` with its ideas switched off is the paper's training, so each
"idea" row switches exactly one on. Experiments run ``--jobs`` at a time (on one GPU, many small
trainings share it well; on a CPU keep the default 1); ``benchmarks/results.py`` then writes
RESULTS.md.

    python -m benchmarks.experiments --max-minutes 40                    # all, one after another
    python -m benchmarks.experiments --jobs 12 --parallel-seeds --max-minutes 6  # on one GPU
    python -m benchmarks.experiments best paper                          # a selection
"""

import argparse
import functools
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from benchmarks.discovery import on_baseline

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEST = "configs/anisonet_best.yaml"
FINETUNE = "configs/anisonet_finetune.yaml"
PRETRAIN = "configs/anisonet_pretrain.yaml"
FOUNDATION = "configs/anisonet_foundation.yaml"
# anisonet_best.yaml with every idea off = configs/anisonet.yaml
IDEAS_OFF = {"loss_metric": "mse", "max_epochs": 120}
EMA = (
    "training_module._target_=nequip.train.EMALightningModule",
    "+training_module.ema_decay=0.999",
)


def _only(*extra, **idea):
    return [f"{k}={v}" for k, v in {**IDEAS_OFF, **idea}.items()] + list(extra)


# name: (group, description, config, overrides, seeds, pre-training config)
EXPERIMENTS = {
    "paper": (
        "ablation",
        "paper settings: l_max 3, 0e+2e readout",
        "configs/anisonet.yaml",
        [],
        [0],
        None,
    ),
    "scalar_6x0e": (
        "ablation",
        "non-equivariant 6x0e readout",
        "configs/anisonet_scalar.yaml",
        [],
        [0],
        None,
    ),
    **{
        f"l_max_{lmax}": (
            "ablation",
            f"l_max {lmax}",
            "configs/anisonet.yaml",
            [f"l_max={lmax}"],
            [0],
            None,
        )
        for lmax in (0, 1, 2, 4)
    },
    "ema": ("idea", "EMA of the weights (decay 0.999)", BEST, _only(*EMA), [0], None),
    "lr_decay": (
        "idea",
        "learning-rate decay 0.95 per epoch (60 epochs)",
        BEST,
        _only(lr_decay=0.95, max_epochs=60),
        [0],
        None,
    ),
    "anisotropic_loss": (
        "idea",
        "loss + MSE of the 2e part (weight 1)",
        BEST,
        _only(anisotropic_loss_weight=1.0),
        [0],
        None,
    ),
    "r_max_6": (
        "idea",
        "cutoff 6 A instead of 5 A",
        "configs/anisonet.yaml",
        ["r_max=6.0"],
        [0],
        None,
    ),
    "l1_loss": (
        "idea",
        "L1 (MAE) loss on the 0e+2e coefficients instead of MSE",
        BEST,
        _only(loss_metric="mae"),
        [0],
        None,
    ),
    "pretrain": (
        "idea",
        "pre-train on phonondb, fine-tune on mp_subset (half the time each)",
        FINETUNE,
        _only(),
        [0],
        PRETRAIN,
    ),
    "best_long": (
        "idea",
        "configs/anisonet_best.yaml with 60 instead of 30 fine-tuning epochs",
        FINETUNE,
        ["max_epochs=60"],
        [0],
        PRETRAIN,
    ),
    "best": (
        "best",
        "configs/anisonet_best.yaml: L1 loss + pre-training on phonondb",
        FINETUNE,
        [],
        [0, 1, 2],
        PRETRAIN,
    ),
    "foundation_frozen": (
        "foundation",
        "configs/anisonet_foundation.yaml as shipped until 2026-12-01: frozen SevenNet-0 "
        "(2 blocks) + 1 head convolution, readout linear, checkpoint by validation loss",
        FOUNDATION,
        list(on_baseline()),  # configs/anisonet_foundation.yaml as shipped until 2026-12-01
        [0, 1, 2],
        None,
    ),
    "foundation_physical": (
        "foundation",
        "the same with the I + PSD readout (eigenvalues >= 1), 15 epochs",
        FOUNDATION,
        list(on_baseline("readout=square", "max_epochs=15")),
        [0, 1, 2],
        None,
    ),
    "foundation_finetune": (
        "foundation",
        "the same, backbone fine-tuned at lr 3e-4, 6 epochs",
        FOUNDATION,
        list(on_baseline("freeze_backbone=false", "max_epochs=6")),
        [0, 1, 2],
        None,
    ),
    "foundation_log_spearman": (
        "foundation",
        "configs/anisonet_foundation.yaml: the same backbone and head, readout log, checkpoint "
        "by validation Spearman a_r (the ready model since 2026-12-01)",
        FOUNDATION,
        [],
        [0, 1, 2],
        None,
    ),
}


def _command(name, max_minutes, out, parallel_seeds, extra=()):
    _, _, config, overrides, seeds, pretrain = EXPERIMENTS[name]
    jobs = len(seeds) if parallel_seeds else 1
    # the overrides before the options: after `--seeds` they would be read as seeds
    command = [
        sys.executable,
        "-m",
        "benchmarks.accuracy",
        config,
        *overrides,
        *extra,
        "--name",
        name,
        "--out",
        out,
        "--jobs",
        str(jobs),
        "--seeds",
        *map(str, seeds),
    ]
    if max_minutes:
        # pre-training and fine-tuning share the budget
        command += ["--max-minutes", str(max_minutes / (2 if pretrain else 1))]
    if pretrain:
        command += ["--pretrain", pretrain]
    return command


def _run(name, max_minutes, out, parallel_seeds, extra=()):
    log = ROOT / out / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.run(
            _command(name, max_minutes, out, parallel_seeds, extra),
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        ).returncode
    print(f"{name}: {'done' if code == 0 else f'FAILED (exit {code}), see {log}'}", flush=True)
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"experiments (default: all): {list(EXPERIMENTS)}")
    parser.add_argument("--max-minutes", type=float, help="wall-time budget per experiment")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at the same time")
    parser.add_argument(
        "--parallel-seeds",
        action="store_true",
        help="train an experiment's seeds at the same time (GPU)",
    )
    parser.add_argument("--out", default="benchmarks/runs")
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        help="Hydra overrides appended to every experiment's (a smoke run: max_epochs=1 ...)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(EXPERIMENTS)
    if unknown:
        parser.error(f"unknown experiment(s) {sorted(unknown)}; known: {list(EXPERIMENTS)}")
    names = args.names or list(EXPERIMENTS)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with ThreadPoolExecutor(args.jobs) as pool:
        run = functools.partial(
            _run,
            max_minutes=args.max_minutes,
            out=args.out,
            parallel_seeds=args.parallel_seeds,
            extra=args.overrides,
        )
        codes = list(pool.map(run, names))
    return int(any(codes))


if __name__ == "__main__":
    sys.exit(main())
