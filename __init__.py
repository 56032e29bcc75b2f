"""DragonDiffusion for ComfyUI: the entry point ComfyUI imports from custom_nodes/.

Importing this file needs no ComfyUI (the test suite imports it); everything
ComfyUI-specific lives in ``nodes/``, the algorithm in ``dragon_core/``.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
