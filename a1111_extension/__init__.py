"""AUTOMATIC1111 / Forge glue for Headshot Studio: the "Headshot Studio" tab and the /headshot/v1 routes.

Callbacks are registered only inside a WebUI (modules.script_callbacks importable); anywhere else
importing this package does nothing, so tests and other hosts can import it.
"""

from __future__ import annotations

import logging
import sys


def on_ui_tabs():
    try:
        from .tab import on_ui_tabs as tabs

        return tabs()
    except Exception:  # the WebUI keeps loading; the console says why the tab is missing
        logging.error("[Headshot Studio] the tab failed to build:", exc_info=True)
        return []


def on_app_started(demo, app):
    try:
        from .routes import register as add_routes

        add_routes(app)
    except Exception:
        logging.error("[Headshot Studio] the /headshot/v1 routes failed to register:", exc_info=True)


def register() -> bool:
    """Register the tab and routes with the WebUI, once per set of callbacks (a UI reload clears them and
    runs scripts/headshot_studio.py again, which calls this again). False outside a WebUI."""
    callbacks = sys.modules.get("modules.script_callbacks")
    if callbacks is None:
        return False
    known = getattr(callbacks, "callback_map", {}).get("callbacks_ui_tabs", [])
    if any(getattr(entry, "callback", None) is on_ui_tabs for entry in known):
        return True
    callbacks.on_ui_tabs(on_ui_tabs)
    callbacks.on_app_started(on_app_started)
    return True


register()
