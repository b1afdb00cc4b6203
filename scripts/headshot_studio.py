"""A1111 discovers extensions through scripts/: this shim puts the core on the path and loads the glue."""

import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (_root, os.path.join(_root, "shared")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# The WebUI puts its own sys.path back after loading each script, so the paths above are gone by the
# time the tab is built: importing the packages now keeps them (their submodules resolve through them).
import a1111_extension  # noqa: E402
import headshot  # noqa: E402,F401

a1111_extension.register()
