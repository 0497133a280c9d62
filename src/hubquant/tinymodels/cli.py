"""Command line entry for building a tiny model (``hubquant demo build-model``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .build import build_tiny_model
from .specs import TINY_MODELS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubquant demo build-model",
        description="Build a tiny Phi-family model: real tokenizer and config, random weights.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="tiny model to build (see --list)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="model folder to create (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights (default: 0)")
    parser.add_argument("--list", action="store_true", help="list the available tiny models and exit")
    return parser


def build_main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default: sys.argv[1:]) and return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in TINY_MODELS.items():
            print(f"{name:34} {spec.hub_id:36} {spec.summary}")
        return 0
    if args.name is None or args.out is None:
        parser.error("NAME and --out DIR are required unless --list is given")
    if args.name not in TINY_MODELS:
        parser.error(f"unknown model {args.name!r}; run with --list to see the names")

    started = time.perf_counter()
    try:
        folder = build_tiny_model(args.name, args.out, seed=args.seed)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"built {args.name} in {folder} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(build_main())
