"""Write benchmarks/RESULTS.md from the figures the benchmark scripts saved.

Reads ``RUNS/<experiment>/accuracy.json`` (``benchmarks/accuracy.py``, run by
``benchmarks/experiments.py``) and ``RUNS/speed_*.json`` (``benchmarks/speed.py --out``, with or
without ``--foundation``).

    python benchmarks/results.py                 # benchmarks/runs -> benchmarks/RESULTS.md
"""

import argparse
import json
import pathlib

from experiments import EXPERIMENTS
from speed import levers_table, training_table
from speed import table as speed_table

from aniso_nequip.io import atomic_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = ("eps_poly_mae", "anisotropy_ratio_mae")
# Figures not measured by these scripts, each with where it comes from (printed as the table's
# source column). Issue 14 ("Accuracy and speed: beat the original AnisoNet, measured side by
# side") states the first two, measured on the 2-core CPU of these benchmarks on the bundled
# mp_subset split (883 / 110 / 111) before this package was written.
REFERENCES = [
    {
        "model": "original AnisoNet code, paper settings (10.4 M parameters)",
        "eps_poly_mae": None, "a_r_mae": None, "speed": "2.8", "epoch": "320 s",
        # issue 14: "about 2.8 structures/s (320 s per epoch: its 120 epochs take ~11 hours)"
        "source": "issue 14, measured on the 2-core CPU (training speed only)",
    },
    {
        "model": "plain re-implementation on nequip blocks, paper settings, 1 seed",
        "eps_poly_mae": 0.83, "a_r_mae": 0.24, "speed": "38.7", "epoch": "24.5 s",
        # issue 14: "120 epochs in 49 min, 38.7 structures/s training ... test MAE eps_poly 0.83,
        # a_r 0.24"; 24.5 s per epoch = 49 min / 120 epochs
        "source": "issue 14, measured on the 2-core CPU (time/epoch: 49 min / 120 epochs)",
    },
    {
        "model": "paper (Lou & Ganose 2025), 6x more training data",
        "eps_poly_mae": 0.31, "a_r_mae": 0.078, "speed": "", "epoch": "",
        # Lou & Ganose, Faraday Discuss. (2025), doi:10.1039/D4FD00096J: test MAE of the
        # equivariant model on the full MP set (6,706 crystals, 80/10/10), 0.311 / 0.078
        "source": "the paper's reported test MAEs (full MP, doi:10.1039/D4FD00096J), "
                  "as quoted in issue 14",
    },
]  # fmt: skip


def _pm(summary, key):
    mean, std = summary[f"{key}_mean"], summary[f"{key}_std"]
    return f"{mean:.3f}" if len(summary["seeds"]) == 1 else f"{mean:.3f} ± {std:.3f}"


def _machine(m):
    return m["gpu"] or f"{m['cpu']} ({m['cores']} cores)"


def _accuracy_rows(runs, names):
    header = ("experiment", "what", "seeds", "epochs run (best)", "wall (min)", "MAE eps_poly",
              "MAE a_r", "component MAE", "machine")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in names:
        if name not in runs:
            continue
        s = runs[name]
        epochs = "/".join(str(r["epochs"]) for r in s["runs"])
        best = "/".join(str(r["best_epoch"]) for r in s["runs"])
        wall = max(r["wall_s"] for r in s["runs"]) / 60
        cells = [name, EXPERIMENTS[name][1], str(len(s["seeds"])), f"{epochs} ({best})",
                 f"{wall:.1f}", _pm(s, "eps_poly_mae"), _pm(s, "anisotropy_ratio_mae"),
                 _pm(s, "component_mae"), _machine(s["machine"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        if s.get("ensemble"):
            e = s["ensemble"]
            figures = [f"{e[k]:.3f}" for k in ("eps_poly_mae", "anisotropy_ratio_mae",
                                                "component_mae")]  # fmt: skip
            what = f"mean prediction of the {len(s['seeds'])} seeds' models"
            lines.append(f"| {name} (ensemble) | {what} | | | | " + " | ".join(figures) + " | |")
    return "\n".join(lines) + "\n"


def _robustness_rows(runs, names):
    header = ("experiment", "MAE eps_poly without graphite", "MAE a_r without graphite",
              "phonondb crystals", "phonondb MAE eps_poly", "phonondb MAE a_r")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in names:
        s = runs[name]
        w, ood = s["without_most_anisotropic"], s["phonondb_ood"]
        cells = [name, *(f"{w[k]['mean']:.3f} ± {w[k]['std']:.3f}" for k in KEYS[:2]),
                 str(s["runs"][0]["phonondb_ood"]["n"]),
                 *(f"{ood[k]['mean']:.3f} ± {ood[k]['std']:.3f}" for k in KEYS[:2])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _per_system(summary):
    systems = summary["runs"][0]["per_crystal_system"]
    lines = ["| crystal system | crystals | MAE eps_poly | MAE a_r |", "|" + " --- |" * 4]
    for system in systems:
        runs = [r["per_crystal_system"][system] for r in summary["runs"]]
        eps = sum(r["eps_poly_mae"] for r in runs) / len(runs)
        a_r = sum(r["anisotropy_ratio_mae"] for r in runs) / len(runs)
        lines.append(f"| {system} | {runs[0]['n']} | {eps:.3f} | {a_r:.3f} |")
    return "\n".join(lines) + "\n"


def render(runs_dir: pathlib.Path) -> str:
    runs = {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/accuracy.json")}
    runs = {name: s for name, s in runs.items() if name in EXPERIMENTS}
    groups = {
        g: [n for n, e in EXPERIMENTS.items() if e[0] == g]
        for g in ("ablation", "idea", "foundation")
    }
    out = [
        "# Benchmark results\n",
        "Generated by `python benchmarks/results.py` from the JSON files that "
        "`benchmarks/experiments.py` (through `benchmarks/accuracy.py`) and `benchmarks/speed.py` "
        "write; every accuracy figure is on the bundled `mp_subset` test split (111 crystals), "
        "trained on its 883 training crystals (plus `phonondb` for pre-training). The machine and "
        "date of each figure are beside it; wall times of experiments that ran side by side on one "
        "GPU are shared-GPU times.\n",
        "## Reference points\n",
        "| model | MAE eps_poly | MAE a_r | training structures/s (2-core CPU) | time/epoch "
        "| source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in REFERENCES:
        out.append(f"| {r['model']} | {r['eps_poly_mae'] or ''} | {r['a_r_mae'] or ''} "
                   f"| {r['speed']} | {r['epoch']} | {r['source']} |")  # fmt: skip
    out.append("")
    if "best" in runs:
        out += ["## Best configuration (`configs/anisonet_best.yaml`), mean ± std over seeds\n",
                _accuracy_rows(runs, ["best", "paper"]),
                "Per crystal system (mean over seeds):\n", _per_system(runs["best"])]  # fmt: skip
    foundation = [n for n in groups["foundation"] if n in runs]
    if foundation:
        out += ["## Foundation backbones (`configs/anisonet_foundation.yaml`), mean ± std over "
                "seeds\n", _accuracy_rows(runs, [*foundation, "best", "paper"]),
                "Without the most anisotropic test crystal (graphite, `a_r` 12), and on the "
                "`phonondb` test split (PBEsol) less the crystals in the `mp_subset` training "
                "split (out of distribution):\n", _robustness_rows(runs, foundation),
                f"Per crystal system (`{foundation[0]}`, mean over seeds):\n",
                _per_system(runs[foundation[0]])]  # fmt: skip
    out += ["## Accuracy ideas, one at a time, equal wall-time budget\n",
            "Each row is the paper's training with one change (`configs/anisonet_best.yaml` with "
            "the other ideas off; see `benchmarks/experiments.py`).\n",
            _accuracy_rows(runs, ["paper", *groups["idea"]]),
            "## The paper's ablations on our data (its Table 2: readout and l_max)\n",
            _accuracy_rows(runs, groups["ablation"])]  # fmt: skip
    for path in sorted(runs_dir.glob("speed_*.json")):
        speed = json.loads(path.read_text())
        m = speed["machine"]
        if "foundation" in speed:  # speed.py --foundation: today's path and the new one
            f = speed["foundation"]
            out += [f"## Frozen foundation config and shipped model, today's path and the new "
                    f"one: {_machine(m)}, torch {m['torch']}, {m['date']}\n",
                    *([f"**{speed['note']}**\n"] if speed.get("note") else []),
                    "Training (`configs/anisonet_foundation.yaml`), without and with the "
                    "backbone feature cache:\n", training_table(f["training"]),
                    "Inference of the shipped model, one lever added per row "
                    "(`benchmarks/levers.py`):\n", levers_table(f["inference"])]  # fmt: skip
            continue
        out += [f"## Speed: {_machine(m)}, torch {m['torch']}, {m['date']}\n",
                speed_table(speed["results"])]  # fmt: skip
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    text = render(pathlib.Path(args.runs))
    with atomic_file(args.out, force=True) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
