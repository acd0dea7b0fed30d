"""Console entry points: argument parsers that call one library function per command."""

import argparse


def add_command(subparsers, name: str, help: str, epilog: str, func=None):
    """Add the sub-command ``name`` with its examples (``epilog``, kept as written) and the
    function that runs it (``func(args)``); returns its parser."""
    parser = subparsers.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser
