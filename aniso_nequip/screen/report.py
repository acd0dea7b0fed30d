"""Final screening outputs from finished shards: ``ranking.csv``, ``candidates.extxyz``,
``summary.md``/``summary.json`` and the plots of the paper's Fig. 6 (``a_r`` by structural
dimensionality, ``a_r`` histogram of the screened crystals against the training set)."""

import csv
import json
import pathlib
from typing import Dict, List, Optional

import ase.io
import numpy as np

from .. import plots
from ..data.files import read_frames
from ..domain import domain_lines, out_of_domain_summary
from ..io import output_set
from ..metrics import derived, reference_tensor
from .layout import (
    ID_LIST_SUFFIXES,
    OUTPUTS,
    PHYSICAL_MIN_EIGENVALUE,
    Settings,
    shard_path,
    sort_key,
)

TOP_TABLE = 10
LISTED = 50  # crystals listed by name per rule in summary.md (all are in summary.json)
CONSOLE_LISTED = 10  # skipped structures listed on the console
LISTED_UNPHYSICAL = 20  # unphysical predictions listed in summary.md and summary.json
UNPHYSICAL_WHY = (
    "eps_inf eigenvalues are >= 1 for any real material; a smaller predicted eigenvalue is a "
    "model failure, typically for a crystal outside its training distribution, and makes a_r "
    "meaningless"
)


def _physical(row: Dict[str, str]) -> bool:
    """A CSV row's ``physical`` (written as ``True``/``False``)."""
    return row["physical"] == "True"


def _ranked_rows(out, settings: Settings) -> List[Dict[str, str]]:
    rows = []
    for i in range(settings.shards):
        with open(shard_path(out, i, settings.shards, ".csv"), newline="") as f:
            rows += list(csv.DictReader(f))
    score = settings.score_column
    rows.sort(
        key=lambda r: sort_key(float(r[score]), int(r["index"]), settings.ranked_last(_physical(r)),
                               r["out_of_domain"] == "True")  # fmt: skip
    )
    return [{"rank": str(rank), **row} for rank, row in enumerate(rows, start=1)]


def _candidates(out, settings: Settings) -> List[ase.Atoms]:
    """The best ``settings.top`` of the shards' candidates (physical ones only unless
    ``keep_unphysical``: the shards kept no others)."""
    frames = []
    for i in range(settings.shards):
        frames += ase.io.read(shard_path(out, i, settings.shards, ".extxyz"), ":")
    score = settings.score_column
    frames.sort(key=lambda a: sort_key(float(a.info[score]), int(a.info["index"]), False,
                                       bool(a.info.get("out_of_domain", False))))  # fmt: skip
    for rank, atoms in enumerate(frames[: settings.top], start=1):
        atoms.info["rank"] = rank
    return frames[: settings.top]


def training_a_r(settings: Settings) -> Optional[np.ndarray]:
    """``a_r`` of the reference tensors in the training-set files (``settings.training_set``, else
    the ``exclude`` frame files); ``None`` when none carries tensors."""
    paths = settings.training_set
    if paths is None:
        paths = [p for p in settings.exclude if pathlib.Path(p).suffix not in ID_LIST_SUFFIXES]
    tensors = []
    for path in paths:
        frames = read_frames(path)
        tensors += [t for t in map(reference_tensor, frames) if t is not None]
    return derived(np.stack(tensors))["a_r"] if tensors else None


def _dim_label(value: str) -> str:
    return f"{value}D" if value else "n/a"


def _cell(value) -> str:
    try:
        return f"{float(value):.3f}"
    except ValueError:
        return value


def _summary_md(settings: Settings, summary: Dict, top, files: List[str]) -> str:
    """``summary.md``; ``top`` are the rows of the top table."""
    score = settings.score_column
    ranked_by = score
    if settings.ensemble and settings.rank_by != "mean":
        sign = "+" if settings.rank_by == "upper" else "-"
        ranked_by = f"{score} = a_r_mean {sign} {settings.k} * a_r_std"
    lines = [
        "# Screening summary",
        "",
        f"- models: {', '.join(f'`{m}`' for m in settings.models)}",
        f"- structures: {', '.join(f'`{s}`' for s in settings.structures)}",
        f"- ranked by `{ranked_by}`, descending; {settings.shards} shard(s)",
        "",
        "## Counts",
        "",
        f"- structures read: {summary['read']}",
    ]
    for name, rule in summary["rules"].items():
        lines.append(f"- removed by `{name}`: {len(rule['removed'])}")
    lines += [
        f"- skipped as unusable (see below): {len(summary['invalid'])}",
        f"- screened (predicted): {summary['predicted']}",
        f"- unphysical predictions (smallest eigenvalue < 1): {summary['unphysical']['count']}",
    ]
    if summary["dimensionality_counts"]:
        counts = summary["dimensionality_counts"].items()
        lines.append(f"- by dimensionality: {', '.join(f'{d}: {n}' for d, n in counts)}")
    lines += [
        "",
        "## Filters",
        "",
        "| rule | applied to | skipped (no metadata) | removed |",
        "| --- | --- | --- | --- |",
    ]
    for rule in summary["rules"].values():
        lines.append(
            f"| {rule['description']} | {rule['applied']} | {rule['no_metadata']} "
            f"| {len(rule['removed'])} |"
        )
    for name, rule in summary["rules"].items():
        if rule["removed"]:
            matched = rule.get("matched", {})
            shown = [f"{r} ({matched[r]})" if r in matched else r for r in rule["removed"][:LISTED]]
            more = len(rule["removed"]) - LISTED
            lines += ["", f"Removed by `{name}`: {', '.join(shown)}" + (" ..." if more > 0 else "")]
    invalid = summary["invalid"]
    if invalid:
        lines += ["", "## Skipped structures", "", f"{len(invalid)} structure(s) not screened:", ""]
        lines += [f"- {name}: {problem}" for name, problem in list(invalid.items())[:LISTED]]
        if len(invalid) > LISTED:
            lines.append(f"- ... and {len(invalid) - LISTED} more (see summary.json)")
    untrained = summary["untrained_elements"]
    if untrained:
        elements = sorted({e for els in untrained.values() for e in els})
        lines += [
            "",
            "## Elements outside the training data",
            "",
            f"{len(untrained)} screened crystal(s) hold elements the model(s) never saw in "
            f"training ({', '.join(elements)}): their predictions are extrapolations.",
            "",
        ]
        lines += [f"- {name}: {', '.join(els)}" for name, els in list(untrained.items())[:LISTED]]
    lines += domain_lines(summary["out_of_domain"], LISTED)
    unphysical = summary["unphysical"]
    if unphysical["count"]:
        placed = (
            "They are ranked by score with the others (--keep-unphysical)"
            if settings.keep_unphysical
            else "They are ranked after all physical predictions and left out of "
            "`candidates.extxyz` and the top table"
        )
        lines += [
            "",
            "## Unphysical predictions",
            "",
            f"{unphysical['count']} crystal(s) got a predicted tensor with smallest eigenvalue "
            f"below 1 (`physical` false in `ranking.csv`): {UNPHYSICAL_WHY}. {placed}; the plots "
            "leave them out.",
            "",
        ]
        lines += [
            f"- {c['id']} ({c['formula']}): smallest eigenvalue {c['eig_1']:.3f}"
            for c in unphysical["listed"]
        ]
        if unphysical["count"] > len(unphysical["listed"]):
            lines.append("- ...")
    columns = settings.columns()
    stats = columns[columns.index("formula") + 1 : columns.index("physical")]
    header = ["rank", "id", "formula", *stats, "crystal_system"]
    if settings.keep_unphysical:
        header.insert(-1, "physical")
    if settings.dimensionality:
        header.insert(-1, "dimensionality")
    lines += [
        "",
        f"## Top {min(TOP_TABLE, len(top))}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for row in top[:TOP_TABLE]:
        cells = [
            _cell(row[c]) if c in stats else _dim_label(row[c]) if c == "dimensionality" else row[c]
            for c in header
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seconds = summary["seconds"]
    per_s = summary["predicted"] / seconds["total"] if seconds["total"] else float("nan")
    lines += [
        "",
        "## Throughput",
        "",
        f"{summary['read']} structures read and {summary['predicted']} screened in "
        f"{seconds['total']:.1f} s (summed over shards): {per_s:.1f} screened structures/s; "
        f"prediction {seconds['predict']:.1f} s, dimensionality "
        + (f"{seconds['dimensionality']:.1f} s." if settings.dimensionality else "skipped."),
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{f}`" for f in files]
    return "\n".join(lines) + "\n"


def write_outputs(out, settings: Settings, summary: Dict) -> Dict:
    """Write the final outputs into ``out`` (all of them or none,
    :func:`~aniso_nequip.io.output_set`; a merge running at the same time is waited for);
    returns the summary with the output file names added."""
    rows = _ranked_rows(out, settings)
    physical = [r for r in rows if _physical(r)]
    unphysical = [r for r in rows if not _physical(r)]
    top = rows if settings.keep_unphysical else physical
    score = settings.score_column
    training = training_a_r(settings)
    files = [OUTPUTS[k] for k in ("ranking", "candidates", "summary", "summary_json")]
    outputs = pathlib.Path(out) / "outputs"  # names the lock and the staging folder
    with output_set(out, OUTPUTS.values(), force=True, key=outputs, wait=True) as stage:
        with open(stage / OUTPUTS["ranking"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["rank", *settings.columns()])
            writer.writeheader()
            writer.writerows(rows)
        ase.io.write(stage / OUTPUTS["candidates"], _candidates(out, settings), format="extxyz")
        if settings.dimensionality and physical:
            files.append(OUTPUTS["by_dimensionality"])
            groups = {}
            for row in physical:
                groups.setdefault(_dim_label(row["dimensionality"]), []).append(float(row[score]))
            path = stage / OUTPUTS["by_dimensionality"]
            plots.a_r_by_dimensionality(groups, score, path, len(unphysical))
        if physical:
            files.append(OUTPUTS["histogram"])
            a_r = np.array([float(r[score]) for r in physical])
            path = stage / OUTPUTS["histogram"]
            plots.a_r_histogram(a_r, training, score, path, len(unphysical))
        dims = [_dim_label(r["dimensionality"]) for r in rows]
        summary = {
            **summary,
            "settings": settings.to_dict(),
            "ranked_by": score,
            "dimensionality_counts": {d: dims.count(d) for d in sorted(set(dims))}
            if settings.dimensionality
            else None,
            "training_set_size": None if training is None else int(len(training)),
            "unphysical": {
                "count": len(unphysical),
                "why": UNPHYSICAL_WHY,
                "min_eigenvalue": PHYSICAL_MIN_EIGENVALUE,
                "ranked_last": not settings.keep_unphysical,
                "listed": [
                    {"id": r["id"], "formula": r["formula"], "eig_1": float(r["eig_1"])}
                    for r in unphysical[:LISTED_UNPHYSICAL]
                ],
            },
            "out_of_domain": out_of_domain_summary(rows, LISTED),
            "top": [{k: r[k] for k in ("rank", "id", "formula", score)} for r in top[:TOP_TABLE]],
            "files": files,
        }
        (stage / OUTPUTS["summary"]).write_text(_summary_md(settings, summary, top, files))
        (stage / OUTPUTS["summary_json"]).write_text(json.dumps(summary, indent=1))
    return summary


def console_summary(summary: Dict, out) -> str:
    """A few lines on a merged run (:func:`write_outputs`' summary): counts, what each filter
    removed, unphysical predictions, the top 5 and the files written into ``out``."""
    lines = [
        f"{summary['read']} structures read, {summary['predicted']} screened, "
        f"{len(summary['invalid'])} skipped as unusable"
    ]
    lines += [f"  skipped {name}: {problem}"
              for name, problem in list(summary["invalid"].items())[:CONSOLE_LISTED]]  # fmt: skip
    if len(summary["invalid"]) > CONSOLE_LISTED:
        lines.append(f"  ... and {len(summary['invalid']) - CONSOLE_LISTED} more: see summary.md")
    lines += [f"  {name:>18}: {len(rule['removed'])} removed"
              for name, rule in summary["rules"].items()]  # fmt: skip
    unphysical = summary["unphysical"]
    if unphysical["count"]:
        where = "ranked last" if unphysical["ranked_last"] else "kept in the ranking"
        lines.append(f"  {unphysical['count']} unphysical prediction(s) (smallest eigenvalue < 1), "
                     f"{where}: see summary.md")  # fmt: skip
    if summary["out_of_domain"]["count"]:
        lines.append(f"  {summary['out_of_domain']['count']} crystal(s) out of the applicability "
                     "domain, ranked after the others: see summary.md")  # fmt: skip
    score = summary["ranked_by"]
    lines += [f"  #{row['rank']} {row['id']} {row['formula']}: {score} {float(row[score]):.3f}"
              for row in summary["top"][:5]]  # fmt: skip
    lines.append(f"wrote {', '.join(summary['files'])} into {out}")
    return "\n".join(lines)
