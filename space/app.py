"""Entry point of the hubquant Space.

On a Hugging Face Space the Hub sets the OAuth variables (``OAUTH_CLIENT_ID``,
``OAUTH_CLIENT_SECRET``, ``OAUTH_SCOPES``, ``OPENID_PROVIDER_URL``, ``SPACE_ID``)
and gradio signs users in with them. ``--local-hub STATE_DIR`` runs the same
sign-in path on one machine: it starts hubquant's local test Hub, registers this
app with the Hub's OAuth provider and points the Space at it.

Limits and folders come from the ``HUBQUANT_SPACE_*`` variables listed in
``hubquant.space.config.ENVIRONMENT``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hubquant.space")

# The scopes of the README's hf_oauth_scopes: read the user's private and gated
# sources, write to and create repos in the user's namespace and organisations.
OAUTH_SCOPES = ["read-repos", "write-repos", "manage-repos"]
LOCAL_SPACE_ID = "local/hubquant"
DEMO_SOURCE = "microsoft/Phi-3-mini-4k-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the hubquant Space.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), help="Address to listen on (default: 0.0.0.0).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="Port to listen on (default: 7860).")
    parser.add_argument(
        "--local-hub",
        metavar="STATE_DIR",
        type=Path,
        help="Start the local test Hub with its state in STATE_DIR and sign in through it "
        "(test users alice, bob and carol); a tiny Phi-3 is published there as " + DEMO_SOURCE + ".",
    )
    return parser.parse_args(argv)


def start_local_hub(state_dir: Path, port: int):
    """Start the test Hub, publish the demo model once, and set the Space's OAuth variables."""
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    from huggingface_hub import HfApi

    from hubquant.testhub import HubServer
    from hubquant.tinymodels import publish_tiny_model

    hub = HubServer(state_dir).start()
    alice = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    if not alice.repo_exists(DEMO_SOURCE):
        log.info("Publishing a tiny %s to the local Hub", DEMO_SOURCE)
        publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=DEMO_SOURCE)
    callbacks = [f"http://{host}:{port}/login/callback" for host in ("127.0.0.1", "localhost")]
    client = hub.register_oauth_app("hubquant (local)", callbacks, OAUTH_SCOPES)
    os.environ.update(
        {
            "SYSTEM": "spaces",
            "SPACE_ID": LOCAL_SPACE_ID,
            "OPENID_PROVIDER_URL": hub.url,
            "OAUTH_CLIENT_ID": client.client_id,
            "OAUTH_CLIENT_SECRET": client.client_secret,
            "OAUTH_SCOPES": client.scope_string,
            "HF_ENDPOINT": hub.url,
        }
    )
    # gradio builds the callback URL from SPACE_HOST when it is set.
    os.environ.pop("SPACE_HOST", None)
    return hub


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    hub = None
    if args.local_hub is not None:
        hub = start_local_hub(args.local_hub, args.port)
        print(f"Local test Hub: {hub.url}; open http://127.0.0.1:{args.port} and sign in as alice, bob or carol", flush=True)
    elif os.environ.get("SYSTEM") != "spaces":
        print(
            "Not on a Space and no --local-hub given: gradio then replaces sign-in with your "
            "local Hugging Face login, whose token cannot run jobs here. Use --local-hub STATE_DIR "
            "to try the Space on this machine.",
            file=sys.stderr,
        )

    # gradio reads the OAuth variables when it is imported, so it comes after them.
    from hubquant.space import load_ui
    from hubquant.space.config import SpaceConfig

    ui = load_ui()
    try:
        ui.launch(SpaceConfig.from_env(), host=args.host, port=args.port)
    finally:
        if hub is not None:
            hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
