"""``hubquant demo``: tiny real Phi-family models for trying hubquant offline."""

from __future__ import annotations

import click


@click.group()
def demo() -> None:
    """Build tiny Phi-family models (real tokenizers and configs, random weights)."""


@demo.command(name="build-model", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def build_model(ctx: click.Context) -> None:
    """Build a tiny model (arguments: NAME --out DIR [--seed N], or --list)."""
    from hubquant.tinymodels.cli import build_main

    raise SystemExit(build_main(list(ctx.args)))
