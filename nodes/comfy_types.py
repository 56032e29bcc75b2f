"""The pack's own ComfyUI socket types.

* ``DRAGON_MEMORY``: a :class:`dragon_core.memory.FeatureMemory`, one image's
  inversion (latent trajectory, decoder self-attention inputs, decoder
  features). Read-only for every consumer, so one inversion can feed many edits.
* ``DRAGON_EDIT``: one of the core's edit objects (Move, Drag, Points,
  Appearance, Paste), validated when the edit node ran.
"""

from __future__ import annotations

from comfy_api.latest import io

DragonMemory = io.Custom("DRAGON_MEMORY")
DragonEdit = io.Custom("DRAGON_EDIT")
