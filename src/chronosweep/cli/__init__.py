"""`chronosweep` command line: edit, model, data, sweep, report, export.

Each subcommand lives next to the code it drives and registers itself through ``register(subparsers)``;
heavy imports happen inside the handlers so `--help` and config errors come back fast.
"""

from __future__ import annotations

import argparse
import sys

from chronosweep.core.errors import UserError


def _registrars():
    from chronosweep.cli import edit as commands
    from chronosweep.cli import export as export_command
    from chronosweep.data import command as data_command
    from chronosweep.report import command as report_command
    from chronosweep.sweep import command as sweep_command

    return [commands.register, data_command.register, sweep_command.register, report_command.register,
            export_command.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronosweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"chronosweep: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chronosweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
