"""DragonDiffusion for ComfyUI: the entry point ComfyUI imports from custom_nodes/.

Importing this file needs no ComfyUI (the test suite imports it); everything
ComfyUI-specific lives in ``nodes/``, the algorithm in ``dragon_core/``.
"""

if __package__:  # ComfyUI (and the packaging test) import the folder as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # pytest imports a rootdir's __init__.py as a plain module named "__init__" when the
    # checkout's folder name is not a Python identifier (e.g. "dragondiffusion-nodes", the
    # repository's own name): no package, so no relative import. Nothing to register then.
    NODE_CLASS_MAPPINGS: dict[str, type] = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
