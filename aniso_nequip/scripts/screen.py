"""``aniso-nequip screen``: the argument parser; the work is in :mod:`aniso_nequip.screen`."""

import argparse

from ..domain import REFERENCE_HELP
from ..errors import InputError
from . import add_command

SCREEN_EXAMPLES = """examples:
  aniso-nequip screen --model outputs/anisonet/best.ckpt \\
      --structures datasets/phonondb_train.extxyz.gz datasets/phonondb_val.extxyz.gz \\
      datasets/phonondb_test.extxyz.gz --exclude datasets/mp_subset_train.extxyz.gz --out screen/
  aniso-nequip screen --model a.ckpt --model b.nequip.zip --structures pool.json.gz \\
      --out screen/ --rank-by upper --k 2 --device cuda
  aniso-nequip screen ... --out screen/ --shard 0/4     # one of 4 processes or machines
  aniso-nequip screen merge screen/                      # once every shard has finished
  sbatch --array=0-15 examples/slurm/screen_shard.sbatch # a SLURM job array (README)

--structures: extxyz files (.gz allowed), folders of CIF/POSCAR files, JSON(.gz) dumps of MP
summary documents (`aniso-nequip data mp-candidates`). --exclude: extxyz files or id lists
(.txt/.ids, one id per line), matched by material id, else by structure. A threshold of `off`
switches its filter off. Re-running the same command resumes: finished shards are skipped, and
an interrupted or killed shard continues after its last finished chunk (--chunk-size).
OUT receives ranking.csv, candidates.extxyz, summary.md, summary.json, a_r_by_dimensionality.png,
a_r_histogram.png, and shards/ (per-shard results).
"""


def _number(kind, low=None, off: bool = False):
    """Parse a ``kind`` (int or float), at least ``low`` when given; ``off`` also accepts
    ``off``/``none`` (parsed as ``None``)."""
    expected = "an integer" if kind is int else "a number"
    expected += f" >= {low}" if low is not None else ""
    expected += " or `off`" if off else ""

    def parse(text: str):
        if off and text.lower() in ("off", "none"):
            return None
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (low is not None and not value >= low):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _shard(text: str):
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def _run(args) -> None:
    from ..pretrained import model_paths
    from ..screen.filters import Thresholds
    from ..screen.layout import Settings
    from ..screen.report import console_summary
    from ..screen.runner import merge, screen

    if args.action == "merge":
        print(console_summary(merge(args.dir), args.dir))
        return
    if not (args.structures and args.out):
        raise InputError("screen needs --structures and --out (see --help)")
    shard, n = args.shard
    settings = Settings(
        models=args.model or model_paths(),
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
        chunk_size=args.chunk_size,
        domain_reference=args.domain_reference,
    )
    result = screen(
        args.out,
        settings,
        shard,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
        force=args.force,
        merge_when_done=args.merge,
        strict=args.strict,
    )
    if not result.ran:
        print(f"shard {shard}/{n} had finished before in {args.out}; skipped")
    if result.summary is not None:
        print(console_summary(result.summary, args.out))
    elif result.missing:
        print(
            f"not merging yet: shard(s) {', '.join(f'{i}/{n}' for i in result.missing)} unfinished"
        )
    else:
        print(f"shard {shard}/{n} done; `aniso-nequip screen merge {args.out}` once all are")


def add_parser(commands) -> None:
    """Add ``screen`` and its ``merge`` action."""
    from ..screen.filters import Thresholds
    from ..screen.layout import RANK_BY, Settings

    defaults = Thresholds()
    screen = add_command(
        commands,
        "screen",
        "rank a pool of crystals by predicted dielectric anisotropy",
        SCREEN_EXAMPLES,
        _run,
    )
    many = dict(action="extend", nargs="+", default=[])
    screen.add_argument(
        "--model",
        **many,
        help="checkpoint or package; several: an ensemble (default: the ready "
        "model shipped with aniso-nequip)",
    )
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
        type=_number(float, off=True),
        default=defaults.max_e_above_hull,
        help=f"eV/atom, kept below (default {defaults.max_e_above_hull}; `off`)",
    )
    screen.add_argument(
        "--min-band-gap",
        type=_number(float, off=True),
        default=defaults.min_band_gap,
        help=f"eV, kept above (default {defaults.min_band_gap}; `off`)",
    )
    screen.add_argument(
        "--max-sites",
        type=_number(int, 1, off=True),
        default=defaults.max_sites,
        help=f"kept with at most this many sites (default {defaults.max_sites}; `off`)",
    )
    screen.add_argument("--rank-by", choices=RANK_BY, default="mean", help="a_r mean or bound")
    screen.add_argument(
        "--k", type=_number(float, 0), default=1.0, help="bound = mean +/- k*std (default 1)"
    )
    screen.add_argument(
        "--top", type=_number(int, 0), default=50, help="crystals in candidates.extxyz (50)"
    )
    screen.add_argument(
        "--keep-unphysical",
        action="store_true",
        help="rank by score alone (default: predictions with an eigenvalue < 1 rank last and "
        "stay out of candidates.extxyz)",
    )
    screen.add_argument(
        "--no-dimensionality",
        action="store_true",
        help="do not classify the --top crystals' structural dimensionality",
    )
    screen.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    screen.add_argument(
        "--batch-size",
        type=_number(int, 1),
        default=32,
        help="structures per batch (32; a batch also ends at 24 atoms per structure on "
        "average, which bounds the memory)",
    )
    screen.add_argument("--shard", type=_shard, default=(0, 1), help="run shard i of n: i/n")
    screen.add_argument(
        "--chunk-size",
        type=_number(int, 1),
        default=Settings.chunk_size,
        help="structures per chunk of a shard, the unit a killed run resumes from (1000)",
    )
    screen.add_argument("--merge", action="store_true", help="merge when all shards are done")
    screen.add_argument("--quiet", action="store_true", help="no progress bar")
    screen.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, when a structure cannot be screened (by default it is "
        "skipped and listed in summary.md)",
    )
    screen.add_argument("--force", action="store_true", help="discard another run's results")
    screen.add_argument("--domain-reference", help=REFERENCE_HELP)
    actions = screen.add_subparsers(dest="action", metavar="merge DIR")
    merge = actions.add_parser("merge", help="merge finished shards of DIR into the outputs")
    merge.add_argument("dir", help="the --out folder of the sharded run")
