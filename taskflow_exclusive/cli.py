"""The ``taskflow-exclusive`` command.

Example::

    $ taskflow-exclusive demo
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from taskflow_exclusive.examples import plain_python

    with tempfile.TemporaryDirectory(prefix="taskflow-exclusive-demo-") as folder:
        return plain_python.run(f"file://{folder}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskflow-exclusive",
        description="Claim-once TaskFlow outputs for Apache Airflow 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="produce a value, claim it, and show a second claim refused")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
