"""``aniso-nequip``: the package's command line (``aniso-nequip data ...``); each command group's
parser lives in its own module here, the work in the library."""

import argparse
import sys

from ..errors import InputError
from . import data, predict, screen, sweep


def build_parser() -> argparse.ArgumentParser:
    """The ``aniso-nequip`` parser with every command group."""
    parser = argparse.ArgumentParser(prog="aniso-nequip", description="aniso-nequip tools")
    commands = parser.add_subparsers(dest="command", required=True)
    data.add_parser(commands)
    screen.add_parser(commands)
    predict.add_parser(commands)
    sweep.add_parser(commands)
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
    except InputError as err:
        print(f"aniso-nequip: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aniso-nequip: interrupted (re-run to resume a sweep or screen)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
