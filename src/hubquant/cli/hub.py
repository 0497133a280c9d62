"""``hubquant hub serve``: the local test Hub, for trying hubquant offline."""

from __future__ import annotations

import click


@click.group()
def hub() -> None:
    """A local Hugging Face Hub server for offline use and tests."""


@hub.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Start the local Hub (options: --state DIR --host --port --accounts FILE)."""
    from hubquant.testhub.cli import serve_main

    raise SystemExit(serve_main(list(ctx.args)))
