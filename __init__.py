"""DragonDiffusion for ComfyUI: the entry point ComfyUI imports from custom_nodes/.

The nodes register through ComfyUI's schema API (``comfy_entrypoint``). The
method lives in ``dragon_core`` (pure torch) and the bundled demo model in
``dragon_demo``, imported by the glue in ``nodes/`` as top-level packages: this
folder is appended to ``sys.path`` for that (appended, so ComfyUI's own top-level
``nodes`` module keeps priority over our ``nodes`` folder, which is only ever
imported relatively). The lab (``dragon_lab``) is never imported by a node.

Importing this file needs no ComfyUI: without ``comfy_api`` (the test suite, a
plain Python) it registers nothing.

``WEB_DIRECTORY``: the frontend extension in ``web/`` (the point and region editor
drawn in the Drag and Move / Resize nodes), served at /extensions/<folder>/.
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes.extension import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    # No ComfyUI here; or pytest imported this rootdir file as a plain module named
    # "__init__" (a checkout folder whose name is not an identifier): nothing to register.
    __all__ = ["WEB_DIRECTORY"]
