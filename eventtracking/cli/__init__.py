"""The ``eventtracking`` command (also ``python -m eventtracking``): one module per command.

* :mod:`~eventtracking.cli.collect`: run the local Segment-compatible collector;
* :mod:`~eventtracking.cli.received`: list what a collector stored;
* :mod:`~eventtracking.cli.replay`: send tracking logs to Segment (:mod:`eventtracking.replay`);
* :mod:`~eventtracking.cli.deadletters`: list and resend what a spool's server finally refused;
* :mod:`~eventtracking.cli.spool`: show a spool directory's parts, drain what dead processes left;
* :mod:`~eventtracking.cli.args`: the argument helpers they share.

Each command module is a plug-in with ``add_parser(subparsers)`` and ``run(args) -> int``.
``eventtracking`` alone prints the help (exit status 0); ``eventtracking --version`` the version.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from eventtracking import __version__
from eventtracking.cli import collect, deadletters, received, replay, spool

COMMANDS = (collect, received, replay, deadletters, spool)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="eventtracking", description="Event tracking tools: a local Segment collector and friends."
    )
    parser.add_argument("--version", action="version", version=f"eventtracking {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for plugin in COMMANDS:
        _add_plugin(subparsers, plugin)
    return parser


def _add_plugin(subparsers: Any, plugin: Any) -> None:
    """Let ``plugin`` add its subcommands; those that set no ``run`` default get ``plugin.run``."""
    before = set(subparsers.choices)
    plugin.add_parser(subparsers)
    for name in set(subparsers.choices) - before:
        subcommand = subparsers.choices[name]
        if subcommand.get_default("run") is None:
            subcommand.set_defaults(run=plugin.run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # run bare: say what there is rather than complain
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
