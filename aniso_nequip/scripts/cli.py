"""``aniso-nequip``: the package's command line (``aniso-nequip data ...``)."""

import argparse
import gzip
import json
import os
import pathlib
import sys

from ..io import OutputExistsError, atomic_file, full_suffix
from . import predict

DATA_EXAMPLES = """examples:
  aniso-nequip data mp --out datasets/mp_dielectric.extxyz      # needs MP_API_KEY and network
  aniso-nequip data convert docs.json.gz --out datasets/mp_dielectric.extxyz --stratify
  aniso-nequip data convert docs.json --out data/mp.h5 --split 0.7 0.15 0.15 --seed 1
  aniso-nequip data stats datasets/mp_subset_train.extxyz.gz --png mp_train_stats.png
  aniso-nequip data mp-candidates --out pool.json.gz             # screening pool (MP_API_KEY)

convert and mp write OUT (all kept crystals), OUT's <stem>_{train,val,test} splits and
<stem>_report.json (what each cleaning rule removed); then train with
  nequip-train -cn configs/anisonet.yaml train_file=<stem>_train.extxyz \\
      val_file=<stem>_val.extxyz test_file=<stem>_test.extxyz
"""

DEFAULT_CACHE = "datasets/raw/mp_dielectric_docs.json.gz"


class CommandError(RuntimeError):
    """A user-facing error: printed without a traceback, exit code 2."""


def _add_pipeline_options(p):
    p.add_argument("--out", required=True, help="output file (.extxyz[.gz], or .h5 for HDF5)")
    p.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions (default 0.8 0.1 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--stratify", action="store_true", help="stratify the split by crystal system")
    p.add_argument("--no-split", action="store_true", help="write only OUT, no splits")
    p.add_argument(
        "--frame-tolerance",
        type=float,
        default=0.05,
        help="max point-group deviation of the tensor, relative (default 0.05)",
    )
    p.add_argument(
        "--keep-frame-mismatch",
        action="store_true",
        help="keep entries failing the frame check (reported all the same)",
    )
    p.add_argument("--min-diagonal", type=float, default=1.0, help="default 1.0")
    p.add_argument("--max-eps-poly", type=float, default=15.0, help="default 15.0")
    p.add_argument("--no-min-diagonal", action="store_true", help="skip the diagonal rule")
    p.add_argument("--no-max-eps-poly", action="store_true", help="skip the eps_poly rule")
    p.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="skip both duplicate rules (material id and StructureMatcher)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _outputs(out: pathlib.Path, split: bool):
    suffix = full_suffix(out)
    stem = out.name[: -len(suffix)] if suffix else out.name
    paths = {"all": out, "report": out.with_name(f"{stem}_report.json")}
    if split:
        paths.update({s: out.with_name(f"{stem}_{s}{suffix}") for s in ("train", "val", "test")})
    return paths


def _run_pipeline(docs, args) -> None:
    from ..data.cleaning import clean
    from ..data.files import write_frames
    from ..data.mp import convert_documents
    from ..data.splits import split_frames

    paths = _outputs(pathlib.Path(args.out), split=not args.no_split)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise CommandError(f"outputs exist: {', '.join(existing)} (pass --force to overwrite)")
    frames, skipped = convert_documents(_progress(docs, "converting"))
    kept, report = clean(
        frames,
        frame_tolerance=None if args.keep_frame_mismatch else args.frame_tolerance,
        min_diagonal=None if args.no_min_diagonal else args.min_diagonal,
        max_eps_poly=None if args.no_max_eps_poly else args.max_eps_poly,
        drop_duplicate_ids=not args.keep_duplicates,
        drop_duplicate_structures=not args.keep_duplicates,
    )
    flagged = sorted(
        (a.info["material_id"], round(float(a.info["frame_deviation"]), 4))
        for a in frames
        if a.info["frame_deviation"] > args.frame_tolerance
    )
    report = {"documents": len(docs), "skipped": skipped, "frame_check_failed": flagged, **report}
    if not kept:
        raise CommandError(f"no crystal left after conversion and cleaning: {_summary(report)}")
    outputs = {"all": kept}
    if not args.no_split:
        outputs.update(
            split_frames(
                kept,
                args.split,
                seed=args.seed,
                stratify_by="crystal_system" if args.stratify else None,
            )
        )
        report["split"] = {
            "fractions": args.split,
            "seed": args.seed,
            "stratify": args.stratify,
            **{s: len(outputs[s]) for s in ("train", "val", "test")},
        }
    for name, frames_out in outputs.items():
        write_frames(frames_out, paths[name], force=args.force)
    _write_json(report, paths["report"], force=args.force)
    print(_summary(report))
    for name, path in paths.items():
        print(f"  {name:>6}: {path}")


def _summary(report) -> str:
    lines = [f"{report['documents']} documents, {len(report['skipped'])} skipped as malformed"]
    for material_id, problem in list(report["skipped"].items())[:20]:
        lines.append(f"  skipped {material_id}: {problem}")
    if len(report["skipped"]) > 20:
        lines.append(f"  ... and {len(report['skipped']) - 20} more (see the report file)")
    if "removed_counts" in report:
        lines.append(f"cleaning: {report['input']} converted -> {report['kept']} kept")
        for rule, count in report["removed_counts"].items():
            ids = report["removed"][rule]
            shown = ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "")
            lines.append(f"  {rule:>19}: {count} removed" + (f" ({shown})" if ids else ""))
    if report.get("split"):
        s = report["split"]
        lines.append(
            f"split (seed {s['seed']}): train {s['train']}, val {s['val']}, test {s['test']}"
        )
    return "\n".join(lines)


def _progress(items, desc):
    from tqdm import tqdm

    return list(tqdm(items, desc=desc, unit="doc", disable=not sys.stderr.isatty()))


def _write_json(obj, path, force=False) -> None:
    compress = str(path).endswith(".gz")
    with atomic_file(path, force=force) as tmp:
        with gzip.open(tmp, "wt") if compress else open(tmp, "w") as f:
            json.dump(obj, f, indent=None if compress else 2)


def _cmd_convert(args) -> None:
    from ..data.mp import read_documents

    try:
        docs = read_documents(args.documents)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    _run_pipeline(docs, args)


def _fetch_documents(search):
    """The documents ``search(mpr)`` returns for an ``MPRester`` made with ``MP_API_KEY``, as
    dicts; the key is never printed."""
    from ..data.mp import document_to_dict

    key = os.environ.get("MP_API_KEY", "").strip()
    if not key:
        raise CommandError(
            "MP_API_KEY is not set: create an API key at https://materialsproject.org/api and "
            "`export MP_API_KEY=...`, or convert a saved dump with `aniso-nequip data convert`"
        )
    try:
        from mp_api.client import MPRester

        with MPRester(api_key=key) as mpr:
            docs = search(mpr)
    except Exception as err:  # network, authentication, server errors
        message = str(err).replace(key, "***")
        raise CommandError(
            f"could not download from the Materials Project ({type(err).__name__}: {message}); "
            "check the network and MP_API_KEY"
        ) from None
    return [document_to_dict(d) for d in docs]


def _cmd_mp(args) -> None:
    from ..data.mp import DOCUMENT_FIELDS, read_documents

    cache = pathlib.Path(args.cache)
    if cache.exists() and not args.refresh:
        print(f"using cached documents {cache} (--refresh to download again)")
        docs = read_documents(str(cache))
    else:
        docs = _fetch_documents(lambda mpr: mpr.materials.dielectric.search(fields=DOCUMENT_FIELDS))
        _write_json(docs, cache, force=args.refresh)
        print(f"downloaded {len(docs)} documents, cached in {cache}")
    _run_pipeline(docs, args)


def _cmd_mp_candidates(args) -> None:
    from ..data.mp import CANDIDATE_FIELDS

    out = pathlib.Path(args.out)
    if out.exists() and not args.force:
        raise CommandError(f"`{out}` exists; pass --force to overwrite it")
    docs = _fetch_documents(
        lambda mpr: mpr.materials.summary.search(
            energy_above_hull=(0, args.max_e_above_hull),
            band_gap=(args.min_band_gap, None),
            nsites=(None, args.max_sites),
            fields=CANDIDATE_FIELDS,
        )
    )
    _write_json(docs, out, force=args.force)
    print(f"wrote {len(docs)} candidate documents to {out}; screen them with")
    print(f"  aniso-nequip screen --model MODEL --structures {out} --out screen/")


def _cmd_stats(args) -> None:
    import numpy as np

    from ..data.files import read_frames
    from ..data.symmetry import crystal_system
    from ..metrics import derived

    if not os.path.isfile(args.file):
        raise CommandError(f"`{args.file}` does not exist")
    frames = read_frames(args.file)
    eps = [a.calc.results.get("dielectric_tensor") if a.calc else None for a in frames]
    with_ref = [i for i, e in enumerate(eps) if e is not None]
    if not with_ref:
        raise CommandError(f"`{args.file}` has no frame with a `dielectric_tensor`")
    d = derived(np.stack([np.reshape(eps[i], (3, 3)) for i in with_ref]))
    systems = [crystal_system(frames[i]) for i in with_ref]
    print(f"{args.file}: {len(frames)} crystals, {len(with_ref)} with dielectric tensors")
    print("crystal systems:")
    for system in sorted(set(systems), key=lambda s: -systems.count(s)):
        print(f"  {system:>13}: {systems.count(system)}")
    for name, values in (("eps_poly", d["eps_poly"]), ("a_r", d["a_r"])):
        q = np.percentile(values, [50, 90, 99])
        print(
            f"{name:>9}: mean {values.mean():.3f}, median {q[0]:.3f}, p90 {q[1]:.3f}, "
            f"p99 {q[2]:.3f}, max {values.max():.3f}"
        )
    png = (
        pathlib.Path(args.png)
        if args.png
        else pathlib.Path(args.file).with_suffix("").with_suffix(".stats.png")
    )
    _stats_plot(d["eps_poly"], d["a_r"], png, title=pathlib.Path(args.file).name)
    print(f"wrote {png}")


def _stats_plot(eps_poly, a_r, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=150)
    axes[0].hist(eps_poly, bins=40, color="tab:blue")
    axes[0].set(xlabel="polycrystalline eps_inf (mean eigenvalue)", ylabel="crystals")
    axes[1].hist(a_r, bins=40, color="tab:orange", log=True)
    axes[1].set(xlabel="anisotropy ratio a_r", ylabel="crystals (log)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_file(path, force=True) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)


SWEEP_EXAMPLES = """examples:
  aniso-nequip sweep configs/sweeps/anisonet_bo.yaml                  # the paper's BO
  aniso-nequip sweep configs/sweeps/anisonet_grid.yaml max_epochs=60  # overrides for every trial
  aniso-nequip sweep configs/sweeps/tiny.yaml --n-trials 3

Re-running the same command resumes the study. Several workers (processes or machines) share one
study through its storage URL; give each its own GPU with CUDA_VISIBLE_DEVICES.
"""


def _cmd_sweep(args) -> None:
    from ..sweep import SpecError, load_spec, run_sweep
    from ..sweep.report import summary, write_results

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise CommandError(f"overrides must look like key=value: {bad}")
    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        raise CommandError(str(err)) from err
    study = run_sweep(spec, n_trials=args.n_trials, cli_overrides=args.overrides)
    print(summary(study, spec, write_results(study, spec)))


SCREEN_EXAMPLES = """examples:
  aniso-nequip screen --model outputs/anisonet/best.ckpt \\
      --structures datasets/phonondb_train.extxyz.gz datasets/phonondb_val.extxyz.gz \\
      datasets/phonondb_test.extxyz.gz --exclude datasets/mp_subset_train.extxyz.gz --out screen/
  aniso-nequip screen --model a.ckpt --model b.nequip.zip --structures pool.json.gz \\
      --out screen/ --rank-by upper --k 2 --device cuda
  aniso-nequip screen ... --out screen/ --shard 0/4     # one of 4 processes or machines
  aniso-nequip screen merge screen/                      # once every shard has finished

--structures: extxyz files (.gz allowed), folders of CIF/POSCAR files, JSON(.gz) dumps of MP
summary documents (`aniso-nequip data mp-candidates`). --exclude: extxyz files or id lists
(.txt/.ids, one id per line), matched by material id, else by structure. A threshold of `off`
switches its filter off. Re-running the same command resumes: finished shards are skipped.
OUT receives ranking.csv, candidates.extxyz, summary.md, summary.json, a_r_by_dimensionality.png,
a_r_histogram.png, and shards/ (per-shard results).
"""


def _threshold(kind):
    def parse(text: str):
        if text.lower() in ("off", "none"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or `off`, got {text!r}") from None

    return parse


def _shard(text: str):
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def _print_screen(summary, out) -> None:
    print(
        f"{summary['read']} structures read, {summary['predicted']} screened, "
        f"{len(summary['unknown_elements'])} skipped for unknown elements"
    )
    for name, rule in summary["rules"].items():
        print(f"  {name:>18}: {len(rule['removed'])} removed")
    unphysical = summary["unphysical"]
    if unphysical["count"]:
        where = "ranked last" if unphysical["ranked_last"] else "kept in the ranking"
        print(f"  {unphysical['count']} unphysical prediction(s) (smallest eigenvalue < 1), "
              f"{where}: see summary.md")  # fmt: skip
    score = summary["ranked_by"]
    for row in summary["top"][:5]:
        print(f"  #{row['rank']} {row['id']} {row['formula']}: {score} {float(row[score]):.3f}")
    print(f"wrote {', '.join(summary['files'])} into {out}")


def _cmd_screen_merge(args) -> None:
    from ..screen.runner import ShardsMissingError, merge
    from ..screen.sources import InputError

    try:
        summary = merge(args.dir)
    except (FileNotFoundError, InputError, ShardsMissingError) as err:
        raise CommandError(str(err)) from err
    _print_screen(summary, args.dir)


def _cmd_screen(args) -> None:
    import torch

    from ..inference import ModelLoadError
    from ..screen.filters import Thresholds
    from ..screen.runner import Settings, merge, missing_shards, prepare, run_shard
    from ..screen.sources import InputError

    if args.action == "merge":
        return _cmd_screen_merge(args)
    if not (args.structures and args.out):
        raise CommandError("screen needs --structures and --out (see --help)")
    if not args.model:
        from ..pretrained import model_paths

        args.model = model_paths()
    for path in args.model + args.structures + args.exclude + (args.training_set or []):
        if not os.path.exists(path):
            raise CommandError(f"`{path}` does not exist")
    shard, n = args.shard
    settings = Settings(
        models=args.model,
        structures=args.structures,
        exclude=args.exclude,
        training_set=args.training_set,
        thresholds=Thresholds(args.max_e_above_hull, args.min_band_gap, args.max_sites),
        rank_by=args.rank_by,
        k=args.k,
        top=args.top,
        keep_unphysical=args.keep_unphysical,
        dimensionality=not args.no_dimensionality,
        shards=n,
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        prepare(args.out, settings, force=args.force)
        if not run_shard(args.out, settings, shard, device, args.batch_size, not args.quiet):
            print(f"shard {shard}/{n} had finished before in {args.out}; skipped")
        if n > 1 and not args.merge:
            print(f"shard {shard}/{n} done; `aniso-nequip screen merge {args.out}` once all are")
            return
        missing = missing_shards(args.out, settings)
        if missing:
            print(f"not merging yet: shard(s) {', '.join(f'{i}/{n}' for i in missing)} unfinished")
        else:
            _print_screen(merge(args.out), args.out)
    except (InputError, ModelLoadError) as err:
        raise CommandError(str(err)) from err


def _add_screen_parser(commands) -> None:
    from ..screen.filters import Thresholds
    from ..screen.runner import RANK_BY

    defaults = Thresholds()
    screen = commands.add_parser(
        "screen",
        help="rank a pool of crystals by predicted dielectric anisotropy",
        epilog=SCREEN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    screen.set_defaults(func=_cmd_screen)
    many = dict(action="extend", nargs="+", default=[])
    screen.add_argument("--model", **many,
                        help="checkpoint or package; several: an ensemble (default: the ready "
                        "model shipped with aniso-nequip)")  # fmt: skip
    screen.add_argument("--structures", **many, help="extxyz(.gz), CIF/POSCAR folder, JSON(.gz)")
    screen.add_argument("--out", help="output folder (also holds the shards; resumable)")
    screen.add_argument("--exclude", **many, help="training set: extxyz files or id lists")
    screen.add_argument(
        "--training-set",
        action="extend",
        nargs="+",
        help="extxyz files with tensors for the a_r histogram (default: --exclude files)",
    )
    screen.add_argument(
        "--max-e-above-hull",
        type=_threshold(float),
        default=defaults.max_e_above_hull,
        help=f"eV/atom, kept below (default {defaults.max_e_above_hull}; `off`)",
    )
    screen.add_argument(
        "--min-band-gap",
        type=_threshold(float),
        default=defaults.min_band_gap,
        help=f"eV, kept above (default {defaults.min_band_gap}; `off`)",
    )
    screen.add_argument(
        "--max-sites",
        type=_threshold(int),
        default=defaults.max_sites,
        help=f"kept with at most this many sites (default {defaults.max_sites}; `off`)",
    )
    screen.add_argument("--rank-by", choices=RANK_BY, default="mean", help="a_r mean or bound")
    screen.add_argument("--k", type=float, default=1.0, help="bound = mean +/- k*std (default 1)")
    screen.add_argument("--top", type=int, default=50, help="crystals in candidates.extxyz (50)")
    screen.add_argument(
        "--keep-unphysical",
        action="store_true",
        help="rank by score alone (default: predictions with an eigenvalue < 1 rank last and "
        "stay out of candidates.extxyz)",
    )
    screen.add_argument("--no-dimensionality", action="store_true", help="skip the slow part")
    screen.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    screen.add_argument("--batch-size", type=int, default=32, help="structures per batch (32)")
    screen.add_argument("--shard", type=_shard, default=(0, 1), help="run shard i of n: i/n")
    screen.add_argument("--merge", action="store_true", help="merge when all shards are done")
    screen.add_argument("--quiet", action="store_true", help="no progress bar")
    screen.add_argument("--force", action="store_true", help="discard another run's results")
    actions = screen.add_subparsers(dest="action", metavar="merge DIR")
    merge = actions.add_parser("merge", help="merge finished shards of DIR into the outputs")
    merge.add_argument("dir", help="the --out folder of the sharded run")


def _command(subparsers, name: str, help: str, func) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name, help=help, epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from ..screen.filters import Thresholds

    parser = argparse.ArgumentParser(prog="aniso-nequip", description="aniso-nequip tools")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser(
        "data",
        help="Materials Project data: download, convert, stats",
        epilog=DATA_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = data.add_subparsers(dest="action", required=True)

    mp = _command(actions, "mp", "download MP dielectric documents (MP_API_KEY), convert", _cmd_mp)
    mp.add_argument("--cache", default=DEFAULT_CACHE, help=f"raw document cache ({DEFAULT_CACHE})")
    mp.add_argument("--refresh", action="store_true", help="download again despite the cache")
    _add_pipeline_options(mp)

    convert = _command(actions, "convert", "convert a saved JSON(.gz) dump", _cmd_convert)
    convert.add_argument("documents", help="JSON or JSON.gz list of MP dielectric documents")
    _add_pipeline_options(convert)

    stats = _command(
        actions, "stats", "crystal systems, eps_poly and a_r distributions", _cmd_stats
    )
    stats.add_argument("file", help="extxyz(.gz) or .h5 dataset")
    stats.add_argument("--png", help="histogram output (default: FILE.stats.png)")

    candidates = _command(
        actions, "mp-candidates", "download a screening pool (MP_API_KEY)", _cmd_mp_candidates
    )
    candidates.add_argument("--out", required=True, help="JSON(.gz) output, e.g. pool.json.gz")
    for option, kind, name in (
        ("--max-e-above-hull", float, "max_e_above_hull"),
        ("--min-band-gap", float, "min_band_gap"),
        ("--max-sites", int, "max_sites"),
    ):
        default = getattr(Thresholds(), name)
        candidates.add_argument(option, type=kind, default=default, help=f"default {default}")
    candidates.add_argument("--force", action="store_true", help="overwrite OUT")

    _add_screen_parser(commands)
    predict.add_parser(commands, CommandError)
    sweep = commands.add_parser(
        "sweep",
        help="optuna hyperparameter sweep of nequip-train runs (YAML spec)",
        epilog=SWEEP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("spec", help="sweep spec YAML, e.g. configs/sweeps/anisonet_bo.yaml")
    sweep.add_argument("--n-trials", type=int, help="finished trials wanted in the study")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every trial")
    sweep.set_defaults(func=_cmd_sweep)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "sweep" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value given after an option such as --n-trials
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "split", None) and (min(args.split) < 0 or abs(sum(args.split) - 1) > 1e-6):
        parser.error(f"--split fractions must be non-negative and sum to 1, got {args.split}")
    try:
        args.func(args)
    except (CommandError, OutputExistsError) as err:
        print(f"aniso-nequip: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aniso-nequip: interrupted (re-run to resume a sweep or screen)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
