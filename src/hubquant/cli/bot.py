"""``hubquant bot serve|worker|jobs`` and ``hubquant watch``: the webhook bot."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

_config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
    help="Bot configuration file (YAML); see bot/bot.example.yaml.",
)


def _load(config_path: Path):
    from hubquant.bot.config import load_config
    from hubquant.bot.queues import open_queue
    from hubquant.cli.logs import register_secret

    config = load_config(config_path)
    register_secret(config.token())
    queue = open_queue(config.queue_url, config.queue)
    return config, queue


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum, frame) -> None:
        click.echo(f"received signal {signum}; stopping after the running jobs", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.group()
def bot() -> None:
    """Run the webhook bot: a receiver for Hub webhooks and the workers that run its jobs."""


@bot.command()
@_config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="TCP port to listen on.")
def serve(config_path: Path, host: str, port: int) -> None:
    """Receive Hub webhooks, queue the jobs the rules select, and serve the status page."""
    from hubquant.bot.receiver import serve as serve_receiver

    config, queue = _load(config_path)
    config.secret()  # Fail before listening when the secret is missing.
    if queue.kind == "sqlite":
        reclaimed = queue.reclaim_stale()
        if reclaimed:
            click.echo(f"requeued {len(reclaimed)} job(s) whose worker stopped: {', '.join(reclaimed)}", err=True)
    serve_receiver(config, queue, host, port)


@bot.command()
@_config_option
@click.option("--concurrent-jobs", type=int, help="Jobs run at the same time (default: worker.concurrent_jobs).")
def worker(config_path: Path, concurrent_jobs: int | None) -> None:
    """Run queued jobs until stopped (SIGTERM or Ctrl-C finishes the running jobs first)."""
    from hubquant.bot.worker import BotWorker

    config, queue = _load(config_path)
    if concurrent_jobs is not None:
        config.worker.concurrent_jobs = concurrent_jobs
    process = BotWorker(config, queue)
    _stop_on_signals(process.stop_event)
    process.run()


@bot.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the job records as JSON.")
def jobs(config_path: Path, as_json: bool) -> None:
    """List the jobs in the queue, newest first, including jobs on private sources."""
    _, queue = _load(config_path)
    records = queue.list_jobs()
    if as_json:
        click.echo(json.dumps([record.to_dict() for record in records], indent=2))
        return
    for record in records:
        spec = record.spec
        click.echo(f"{record.id}  {record.status:8}  {spec.source}@{spec.sha[:12]}  {' '.join(spec.targets)}"
                   f"  attempts {record.attempts}{'  ' + record.error if record.error else ''}")


@click.command()
@_config_option
@click.option("--interval", type=float, help="Seconds between two polls (default: watch.interval_seconds).")
@click.option("--once", is_flag=True, help="Poll once and exit.")
@click.option("--backfill", is_flag=True, help="On the first poll, queue jobs for the models that already exist.")
@click.option("--state", type=click.Path(path_type=Path, dir_okay=False),
              help="File that records the shas seen (default: watch.state).")
def watch(config_path: Path, interval: float | None, once: bool, backfill: bool, state: Path | None) -> None:
    """Apply the bot's rules by polling the Hub, for hosts that cannot receive webhooks.

    Jobs go to the configured queue; run 'hubquant bot worker' to run them.
    """
    from hubquant.bot.watch import Watcher

    config, queue = _load(config_path)
    watcher = Watcher(config, queue, state_path=state, backfill=backfill)
    if once:
        for record in watcher.poll_once():
            click.echo(f"queued {record.id}: {record.spec.source}@{record.spec.sha[:12]}")
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    watcher.run(stop, interval or config.watch_interval_seconds)


__all__ = ["bot", "watch"]
