"""`seesr ui` (not implemented yet)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="(not implemented yet)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("seesr ui is not implemented yet")
