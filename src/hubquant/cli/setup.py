"""``hubquant setup``: create backend toolchains ahead of the first run."""

from __future__ import annotations

import click


@click.command()
@click.argument("backends", nargs=-1)
def setup(backends: tuple[str, ...]) -> None:
    """Create the pinned toolchains of BACKENDS (default: all), plus the reference one.

    Toolchains live under $HUBQUANT_HOME/toolchains (default ~/.cache/hubquant).
    On machines without an NVIDIA GPU torch comes from the CPU index; set
    HUBQUANT_TORCH_INDEX_URL to use another index, or to an empty value for none.
    """
    from hubquant import toolchains

    names = list(backends) or [name for name in toolchains.TOOLCHAINS if name != "reference"]
    for name in ["reference", *names]:
        toolchain = toolchains.ensure(name)
        click.echo(f"{name}: {toolchain.root}")
