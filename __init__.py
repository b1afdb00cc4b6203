"""ComfyUI entry point for Headshot Studio: re-exports comfy_nodes' mappings, nothing else."""

import logging
import os
import sys

_core = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shared")
if _core not in sys.path:
    sys.path.insert(0, _core)  # the `headshot` core package, without a pip install into the host

try:  # comfy_nodes drops single nodes itself; this only guards against the unforeseen
    from .comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
except Exception:  # ComfyUI keeps running, but a pack with zero nodes must never be silent
    logging.error(
        "[Headshot Studio] the pack failed to load, so none of its nodes are available; please report this traceback:",
        exc_info=True,
    )
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
