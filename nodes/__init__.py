"""ComfyUI glue for DragonDiffusion (may import comfy; no algorithm lives here).

The node classes arrive with the node-pack issue; until then the pack loads in
ComfyUI and registers no nodes.
"""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
