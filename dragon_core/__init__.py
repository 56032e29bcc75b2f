"""DragonDiffusion's algorithm in pure torch (no ComfyUI, no diffusers at import).

Typical use with any backend (see ``backend.py``)::

    memory = invert_with_memory(backend, z0, cond, steps=50)
    result = edit_image(backend, memory, Move(mask, dx=6, dy=-3), cond, uncond,
                        default_settings("move"))

Edits: :class:`Move` (move/resize), :class:`Drag`, :class:`Points`,
:class:`Appearance`, :class:`Paste`.
"""

from .edits import Appearance, Drag, Move, Paste, Points
from .memory import FeatureMemory, MemoryPolicy, invert_with_memory
from .sampler import EditResult, edit_image
from .settings import EditSettings, default_settings

__all__ = [
    "Appearance", "Drag", "EditResult", "EditSettings", "FeatureMemory", "MemoryPolicy", "Move", "Paste", "Points",
    "default_settings", "edit_image", "invert_with_memory",
]
