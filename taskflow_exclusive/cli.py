"""The ``taskflow-exclusive`` command.

Example::

    $ taskflow-exclusive demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from taskflow_exclusive.examples import demo

    return demo.main(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskflow-exclusive",
        description="Claim-once TaskFlow outputs for Apache Airflow 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the example DAG with dag.test() (throw-away Airflow home) and show every claim",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's Airflow home (values, log)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
