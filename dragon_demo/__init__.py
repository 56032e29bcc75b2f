"""The bundled demo model: a tiny SD-architecture UNet trained on the shapes world.

It ships with the node pack so a first workflow runs with no download: the
ComfyUI demo loader (``nodes/shapes_comfy.py``) and the command line's default
model (``python -m dragon_core edit``) load it. ``shapes_model`` holds its config,
prompt vocabulary, text encoder and files (``assets/shapes32``); ``shapes_world``
the procedural scenes it was trained on. A leaf package: it imports neither the
method (``dragon_core``) nor the lab (``dragon_lab``).
"""
