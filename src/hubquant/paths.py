"""Locations of hubquant's cache folder (toolchains, built wheels, downloads)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """Return the cache root: ``HUBQUANT_HOME``, else ``$XDG_CACHE_HOME/hubquant``."""
    configured = os.environ.get("HUBQUANT_HOME")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hubquant"
