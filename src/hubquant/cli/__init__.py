"""The ``hubquant`` command line. Errors are formatted here, once."""

from __future__ import annotations

import logging
import os
import sys

import click

from hubquant import __version__
from hubquant.cli.logs import configure_logging
from hubquant.errors import HubquantError


class HubquantGroup(click.Group):
    """Turns hubquant errors into one clear line and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HubquantError as error:
            from hubquant.cli.logs import redact

            click.echo(f"error: {redact(str(error))}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=HubquantGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubquant")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Minimum level of log messages written to stderr.",
)
def main(log_level: str) -> None:
    """Turn a Hugging Face Hub model into validated quantized releases."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    configure_logging(log_level)


def _register() -> None:
    from hubquant.cli import demo, hub, run, setup

    main.add_command(run.run)
    main.add_command(run.plan)
    main.add_command(setup.setup)
    main.add_command(hub.hub)
    main.add_command(demo.demo)

    from hubquant.cli import bot

    main.add_command(bot.bot)
    main.add_command(bot.watch)


_register()

if __name__ == "__main__":
    sys.exit(main())

logging.getLogger(__name__).addHandler(logging.NullHandler())
