"""The hubquant Space: a gradio page that quantizes Hub models for the user's hardware.

`hubquant.space.jobs`, `sources`, `picking` and `views` need only the core
dependencies. `hubquant.space.ui` needs gradio, installed with
``pip install 'hubquant[space]'``, and `load_ui` raises an ImportError with
that command when gradio is missing.
The deployable Space (entry point, README header, Dockerfile) is the top-level
``space/`` folder.
"""

from __future__ import annotations


def load_ui():
    """Import and return `hubquant.space.ui`, raising ImportError with the install command."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError("the Space needs gradio: pip install 'hubquant[space]'") from error
    from hubquant.space import ui

    return ui
