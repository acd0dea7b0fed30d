"""``aniso-nequip data``: the argument parsers; the work is in :mod:`aniso_nequip.data.pipeline`,
:mod:`aniso_nequip.data.mp` and :mod:`aniso_nequip.data.stats`."""

import pathlib

from . import add_command

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


def _add_pipeline_options(p) -> None:
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
        help="max point-group deviation of the tensor, relative (default 0.01: the bundled "
        "data's 99th percentile is 0.005)",
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
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (writing nothing) when a document cannot be converted; by default it is "
        "skipped and listed with its problem",
    )


def _build(docs, args) -> None:
    from ..data.pipeline import build_dataset, dataset_paths, summary
    from ..data.symmetry import FRAME_TOLERANCE

    report = build_dataset(
        docs,
        args.out,
        split=None if args.no_split else args.split,
        seed=args.seed,
        stratify=args.stratify,
        frame_tolerance=FRAME_TOLERANCE if args.frame_tolerance is None else args.frame_tolerance,
        keep_frame_mismatch=args.keep_frame_mismatch,
        min_diagonal=None if args.no_min_diagonal else args.min_diagonal,
        max_eps_poly=None if args.no_max_eps_poly else args.max_eps_poly,
        drop_duplicates=not args.keep_duplicates,
        force=args.force,
        strict=args.strict,
    )
    print(summary(report))
    for name, path in dataset_paths(args.out, split=not args.no_split).items():
        print(f"  {name:>6}: {path}")


def _convert(args) -> None:
    from ..data.mp import read_documents

    _build(lambda: read_documents(args.documents), args)  # read once the outputs are claimed


def _mp(args) -> None:
    from ..data.mp import dielectric_documents

    def documents():  # called once the outputs are claimed
        cache = pathlib.Path(args.cache)
        docs, downloaded = dielectric_documents(cache, refresh=args.refresh)
        if downloaded:
            print(f"downloaded {len(docs)} documents, cached in {cache}")
        else:
            print(f"using cached documents {cache} (--refresh to download again)")
        return docs

    _build(documents, args)


def _stats(args) -> None:
    from ..data.stats import dataset_statistics
    from ..plots import stats_histograms

    stats = dataset_statistics(args.file)
    print(stats.summary())
    file = pathlib.Path(args.file)
    png = pathlib.Path(args.png) if args.png else file.with_suffix("").with_suffix(".stats.png")
    stats_histograms(stats.eps_poly, stats.a_r, png, title=file.name)
    print(f"wrote {png}")


def _mp_candidates(args) -> None:
    from ..data.mp import download_candidates

    out = pathlib.Path(args.out)
    n = download_candidates(
        out, args.max_e_above_hull, args.min_band_gap, args.max_sites, force=args.force
    )
    print(f"wrote {n} candidate documents to {out}; screen them with")
    print(f"  aniso-nequip screen --model MODEL --structures {out} --out screen/")


def add_parser(commands) -> None:
    """Add ``data`` and its actions (``mp``, ``convert``, ``stats``, ``mp-candidates``)."""
    from ..screen.filters import Thresholds

    data = add_command(
        commands, "data", "Materials Project data: download, convert, stats", DATA_EXAMPLES
    )
    actions = data.add_subparsers(dest="action", required=True)

    mp = add_command(
        actions, "mp", "download MP dielectric documents (MP_API_KEY), convert", DATA_EXAMPLES, _mp
    )
    mp.add_argument("--cache", default=DEFAULT_CACHE, help=f"raw document cache ({DEFAULT_CACHE})")
    mp.add_argument("--refresh", action="store_true", help="download again despite the cache")
    _add_pipeline_options(mp)

    convert = add_command(
        actions, "convert", "convert a saved JSON(.gz) dump", DATA_EXAMPLES, _convert
    )
    convert.add_argument("documents", help="JSON or JSON.gz list of MP dielectric documents")
    _add_pipeline_options(convert)

    stats = add_command(
        actions, "stats", "crystal systems, eps_poly and a_r distributions", DATA_EXAMPLES, _stats
    )
    stats.add_argument("file", help="extxyz(.gz) or .h5 dataset")
    stats.add_argument("--png", help="histogram output (default: FILE.stats.png)")

    candidates = add_command(
        actions,
        "mp-candidates",
        "download a screening pool (MP_API_KEY)",
        DATA_EXAMPLES,
        _mp_candidates,
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
