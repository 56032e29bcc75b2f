"""The pack's ComfyUI extension: every node, registered through the schema API."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import capture_nodes, demo_nodes, edit_nodes, memory_nodes, sampler_nodes

ALL_NODES: list[type[io.ComfyNode]] = [*memory_nodes.NODES, *capture_nodes.NODES, *edit_nodes.NODES,
                                       *sampler_nodes.NODES, *demo_nodes.NODES]


class DragonDiffusionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(ALL_NODES)


async def comfy_entrypoint() -> DragonDiffusionExtension:
    return DragonDiffusionExtension()
