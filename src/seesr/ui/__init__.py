"""The local web UI (``seesr ui``, issue 8): :func:`build_app` lays out a Gradio page over the pipeline.

Gradio is an optional dependency (the ``ui`` extra) and is imported only when the page is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app"]


def build_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`seesr.ui.app.build_app`."""
    from seesr.ui.app import build_app as _build_app

    return _build_app(*args, **kwargs)
