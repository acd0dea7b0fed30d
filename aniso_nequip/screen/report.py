"""Final screening outputs from finished shards: ``ranking.csv``, ``candidates.extxyz``,
``summary.md``/``summary.json`` and the plots of the paper's Fig. 6 (``a_r`` by structural
dimensionality, ``a_r`` histogram of the screened crystals against the training set).

Structural dimensionality (the slow step, ~30 ms a crystal) is classified here, for the ranked
top (``candidates.extxyz``) only, not for every crystal of the pool."""

import collections
import csv
import json
import pathlib
import resource
import time
from typing import Dict, Iterator, List, Optional, Tuple

import ase.io
import numpy as np

from .. import plots
from ..data.files import read_frames
from ..data.validation import reference_tensor
from ..domain import OutOfDomainTally, domain_lines
from ..io import output_set
from ..metrics import derived
from .dimensionality import dimensionality
from .duplicates import dropped_indices, find_duplicates
from .layout import (
    ID_LIST_SUFFIXES,
    OUTPUTS,
    PHYSICAL_MIN_EIGENVALUE,
    Settings,
    frame_key,
    frames_of,
    shard_path,
    sorted_rows,
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


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``resource.getrusage``)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _shard_csvs(out, settings: Settings) -> List[pathlib.Path]:
    return [shard_path(out, i, settings.shards, ".csv") for i in range(settings.shards)]


def _identities(paths) -> Iterator[Dict[str, str]]:
    """The rows of ``paths``, one at a time (for :func:`~.duplicates.find_duplicates`)."""
    for path in paths:
        with open(path, newline="") as f:
            yield from csv.DictReader(f)


def _candidates(out, settings: Settings, dropped: set) -> List[ase.Atoms]:
    """The best ``settings.top`` of the shards' candidates (physical ones only unless
    ``keep_unphysical``: the shards kept no others), duplicates ``dropped`` left out."""
    frames = [
        atoms
        for i in range(settings.shards)
        for atoms in frames_of(shard_path(out, i, settings.shards, ".extxyz"))
        if int(atoms.info["index"]) not in dropped
    ]
    frames.sort(key=lambda a: frame_key(a, settings))
    for rank, atoms in enumerate(frames[: settings.top], start=1):
        atoms.info["rank"] = rank
    return frames[: settings.top]


def _classify(candidates: List[ase.Atoms]) -> Tuple[Dict[int, Optional[int]], float]:
    """The dimensionality of each candidate (``{pool index: dimensionality}``, also written into
    its ``info``) and the seconds it took."""
    tic, dims = time.perf_counter(), {}
    for atoms in candidates:
        dims[int(atoms.info["index"])] = dim = dimensionality(atoms)
        if dim is not None:
            atoms.info["dimensionality"] = dim
    return dims, time.perf_counter() - tic


class _Ranking:
    """What the outputs need from the ranking, gathered as its rows stream by: scores of the
    physical crystals (floats only), those of the classified ones (the top) by dimensionality,
    the unphysical count and first few, the top table and the dimensionality counts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ranked = 0
        self.scores: List[float] = []
        self.by_dimensionality: Dict[str, List[float]] = {}
        self.unphysical = 0
        self.unphysical_listed: List[Dict] = []
        self.failed = 0
        self.failed_listed: List[Dict] = []
        self.out_of_domain = OutOfDomainTally(LISTED)
        self.top: List[Dict[str, str]] = []
        self.dimensionality_counts: Dict[str, int] = collections.Counter()

    def add(self, row: Dict[str, str]) -> None:
        if row["failed"]:  # listed, never ranked
            self.failed += 1
            if len(self.failed_listed) < LISTED_UNPHYSICAL:
                entry = {"id": row["id"], "formula": row["formula"], "reason": row["failed"]}
                self.failed_listed.append(entry)
            return
        self.ranked += 1
        self.out_of_domain.add(row)
        classified = row["dimensionality"] not in ("", None)
        dim = _dim_label(row["dimensionality"])
        if classified:
            self.dimensionality_counts[dim] += 1
        if _physical(row):
            score = float(row[self.settings.score_column])
            self.scores.append(score)
            if classified:
                self.by_dimensionality.setdefault(dim, []).append(score)
        else:
            self.unphysical += 1
            if len(self.unphysical_listed) < LISTED_UNPHYSICAL:
                entry = {"id": row["id"], "formula": row["formula"], "eig_1": float(row["eig_1"])}
                self.unphysical_listed.append(entry)
        if len(self.top) < TOP_TABLE and (_physical(row) or self.settings.keep_unphysical):
            self.top.append(row)

    def physical_scores(self) -> np.ndarray:
        return np.array(self.scores)


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


def _nothing_ranked(summary: Dict) -> str:
    """Why the ranking is empty, in one sentence."""
    return (
        f"Nothing to rank: none of the {summary['read']} structures read passed the filters "
        "(summary.md lists what each filter removed and what was skipped); ranking.csv holds "
        "its header only, and no candidates or plots were written."
    )


def _listed(entry: Dict) -> str:
    return f"{entry['id']} ({entry['source']})"


def _listed_section(title: str, intro: str, items: List[str]) -> List[str]:
    """A ``summary.md`` section listing the first :data:`LISTED` of ``items`` (none without)."""
    if not items:
        return []
    lines = ["", f"## {title}", "", intro, "", *(f"- {item}" for item in items[:LISTED])]
    if len(items) > LISTED:
        lines.append(f"- ... and {len(items) - LISTED} more (see summary.json)")
    return lines


def _duplicates_md(summary: Dict) -> List[str]:
    """The duplicates and id clashes sections of ``summary.md`` (none when there are none)."""
    groups = summary["duplicates"]["groups"]
    clashes = summary["id_clashes"]
    return _listed_section(
        "Duplicates",
        f"{len(groups)} crystal(s) occur more than once in the pool (the same atomic "
        "environments and volume: a repeated entry, a rotated, shifted or supercell copy); each "
        "is ranked once, as its first copy in input order:",
        [f"{_listed(g['kept'])}; dropped: {', '.join(map(_listed, g['dropped']))}" for g in groups],
    ) + _listed_section(
        "Ids given to different crystals",
        f"{len(clashes)} id(s) name structures that are not the same crystal; each structure is "
        "ranked under that id with its own `source` (rename them in the inputs to tell them "
        "apart):",
        [f"{name}: {', '.join(sources)}" for name, sources in clashes.items()],
    )


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
        f"- duplicates (the same crystal again, ranked once): {summary['duplicates']['count']}",
        f"- ranked: {summary['ranked']}",
        f"- unphysical predictions (smallest eigenvalue < 1): {summary['unphysical']['count']}",
        f"- failed predictions (`failed`, not ranked): {summary['failed']['count']}",
    ]
    lines += [f"  - {c['id']} ({c['formula']}): {c['reason']}" for c in summary["failed"]["listed"]]
    if not summary["ranked"]:
        lines += ["", f"**{_nothing_ranked(summary)}**"]
    if summary["dimensionality_counts"]:
        counts = summary["dimensionality_counts"].items()
        listed = ", ".join(f"{d}: {n}" for d, n in counts)
        lines.append(f"- by dimensionality (the top {settings.top}): {listed}")
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
    lines += _duplicates_md(summary)
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
        + (f"{seconds['dimensionality']:.1f} s." if settings.dimensionality else "skipped.")
        + f" Peak memory (resident, largest process): {summary['peak_rss_mb']:.0f} MB.",
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{f}`" for f in files]
    return "\n".join(lines) + "\n"


def write_outputs(out, settings: Settings, summary: Dict) -> Dict:
    """Write the final outputs into ``out`` (all of them or none,
    :func:`~aniso_nequip.io.output_set`; a merge running at the same time is waited for);
    returns the summary with the output file names added.

    The shards' rows stream into ``ranking.csv`` in ranking order (:func:`sorted_rows`), every
    crystal found twice (:func:`~.duplicates.find_duplicates`) ranked once; memory holds one row
    per shard and a float per ranked crystal (for the plots). With ``settings.dimensionality``
    the candidates (the top ``settings.top``) are classified first, and only they get a
    ``dimensionality`` in the ranking, the counts and the plot by dimensionality. An empty
    ranking (the filters removed every crystal) gives ``ranking.csv`` with its header only, the
    summaries saying so, and no candidates or plots."""
    paths = _shard_csvs(out, settings)
    duplicates, clashes = find_duplicates(_identities(paths))
    dropped = dropped_indices(duplicates)
    score = settings.score_column
    training = training_a_r(settings)
    ranking = _Ranking(settings)
    files = [OUTPUTS[k] for k in ("ranking", "summary", "summary_json")]
    outputs = pathlib.Path(out) / "outputs"  # names the lock and the staging folder
    with output_set(out, OUTPUTS.values(), force=True, key=outputs, wait=True) as stage:
        candidates = _candidates(out, settings, dropped)
        dims, seconds = _classify(candidates) if settings.dimensionality else ({}, 0.0)
        summary = {**summary, "seconds": {**summary["seconds"]}}
        summary["seconds"]["dimensionality"] += seconds
        summary["seconds"]["total"] += seconds
        with open(stage / OUTPUTS["ranking"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["rank", *settings.columns()])
            writer.writeheader()
            for row in sorted_rows(paths, settings):
                if int(row["index"]) not in dropped:
                    if dims.get(int(row["index"])) is not None:
                        row["dimensionality"] = str(dims[int(row["index"])])
                    row = {"rank": "" if row["failed"] else str(ranking.ranked + 1), **row}
                    ranking.add(row)
                    writer.writerow(row)
        if candidates:
            files.insert(1, OUTPUTS["candidates"])
            ase.io.write(stage / OUTPUTS["candidates"], candidates, format="extxyz")
        unphysical = ranking.unphysical
        if settings.dimensionality and ranking.by_dimensionality:
            files.append(OUTPUTS["by_dimensionality"])
            path = stage / OUTPUTS["by_dimensionality"]
            plots.a_r_by_dimensionality(ranking.by_dimensionality, score, path, unphysical)
        if ranking.scores:
            files.append(OUTPUTS["histogram"])
            path = stage / OUTPUTS["histogram"]
            plots.a_r_histogram(ranking.physical_scores(), training, score, path, unphysical)
        counts = ranking.dimensionality_counts
        summary = {
            **summary,
            "peak_rss_mb": max(summary["peak_rss_mb"], peak_rss_mb()),
            "ranked": ranking.ranked,
            "duplicates": {
                "count": len(dropped),
                "kept": "the first in input order",
                "groups": duplicates,
            },
            "id_clashes": clashes,
            "settings": settings.to_dict(),
            "ranked_by": score,
            "dimensionality_counts": {d: counts[d] for d in sorted(counts)}
            if settings.dimensionality
            else None,
            "training_set_size": None if training is None else int(len(training)),
            "unphysical": {
                "count": unphysical,
                "why": UNPHYSICAL_WHY,
                "min_eigenvalue": PHYSICAL_MIN_EIGENVALUE,
                "ranked_last": not settings.keep_unphysical,
                "listed": ranking.unphysical_listed,
            },
            "failed": {"count": ranking.failed, "listed": ranking.failed_listed},
            "out_of_domain": ranking.out_of_domain.summary(),
            "top": [{k: r[k] for k in ("rank", "id", "formula", score)} for r in ranking.top],
            "files": files,
        }
        (stage / OUTPUTS["summary"]).write_text(_summary_md(settings, summary, ranking.top, files))
        (stage / OUTPUTS["summary_json"]).write_text(json.dumps(summary, indent=1))
    return summary


def console_summary(summary: Dict, out) -> str:
    """A few lines on a merged run (:func:`write_outputs`' summary): counts, what each filter
    removed, unphysical predictions, the top 5 and the files written into ``out``."""
    lines = [
        f"{summary['read']} structures read, {summary['predicted']} screened, "
        f"{len(summary['invalid'])} skipped as unusable"
    ]
    lines += [
        f"  skipped {name}: {problem}"
        for name, problem in list(summary["invalid"].items())[:CONSOLE_LISTED]
    ]
    if len(summary["invalid"]) > CONSOLE_LISTED:
        lines.append(f"  ... and {len(summary['invalid']) - CONSOLE_LISTED} more: see summary.md")
    lines += [
        f"  {name:>18}: {len(rule['removed'])} removed" for name, rule in summary["rules"].items()
    ]
    duplicates = summary["duplicates"]
    if duplicates["count"]:
        groups = duplicates["groups"]
        shown = ", ".join(f"{g['dropped'][0]['id']} = {g['kept']['id']}" for g in groups[:3])
        more = ", ..." if len(groups) > 3 else ""
        lines.append(
            f"  {duplicates['count']} duplicate(s) ranked once, as the first copy "
            f"({shown}{more}): see summary.md"
        )
    for name, sources in list(summary["id_clashes"].items())[:CONSOLE_LISTED]:
        lines.append(f"  id {name} names {len(sources)} different crystals: {', '.join(sources)}")
    unphysical = summary["unphysical"]
    if unphysical["count"]:
        where = "ranked last" if unphysical["ranked_last"] else "kept in the ranking"
        lines.append(
            f"  {unphysical['count']} unphysical prediction(s) (smallest eigenvalue < 1), "
            f"{where}: see summary.md"
        )
    if summary["failed"]["count"]:
        lines.append(
            f"  {summary['failed']['count']} failed prediction(s), not ranked: see summary.md"
        )
    if summary["out_of_domain"]["count"]:
        lines.append(
            f"  {summary['out_of_domain']['count']} crystal(s) out of the applicability "
            "domain, ranked after the others: see summary.md"
        )
    score = summary["ranked_by"]
    lines += [
        f"  #{row['rank']} {row['id']} {row['formula']}: {score} {float(row[score]):.3f}"
        for row in summary["top"][:5]
    ]
    if not summary["ranked"]:
        lines.append(f"  {_nothing_ranked(summary)}")
    lines.append(f"  peak memory {summary['peak_rss_mb']:.0f} MB")
    lines.append(f"wrote {', '.join(summary['files'])} into {out}")
    return "\n".join(lines)
