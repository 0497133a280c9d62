"""`hubquant hub serve`: run the test Hub in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from hubquant.testhub.accounts import load_accounts_file
from hubquant.testhub.server import HubServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubquant hub serve",
        description="Serve a local Hugging Face Hub for tests until Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--state",
        type=Path,
        required=True,
        help="folder that keeps repos, accounts and LFS objects across restarts",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to bind; 0 picks a free one (default: 0)",
    )
    parser.add_argument(
        "--accounts",
        type=Path,
        help=(
            "JSON list of accounts ({name, kind, members, tokens}) to add in place"
            " of the default accounts; accounts already in the state folder stay"
        ),
    )
    return parser


def serve_main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    accounts = load_accounts_file(args.accounts) if args.accounts else None
    server = HubServer(args.state, host=args.host, port=args.port, accounts=accounts)

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        print(f"Test Hub running at {server.url}")
        print(f"  export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1")
        for account in server.accounts():
            for token, role in sorted(account.tokens.items()):
                print(f"  {account.name}: {token} ({role})")
        print("Press Ctrl-C to stop.", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0
