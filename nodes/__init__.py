"""ComfyUI glue for DragonDiffusion (imports comfy; no algorithm lives here).

Modules: ``comfy_backend`` (the core's backend on a ModelPatcher clone),
``shapes_comfy`` (the bundled demo model as a ComfyUI MODEL), ``convert``
(ComfyUI values to core tensors), ``model_info`` (facts about a MODEL, and
the checks of models and conditioning), ``progress`` (per-step progress), the
node modules (``memory_nodes``, ``capture_nodes``, ``edit_nodes``,
``sampler_nodes``, ``demo_nodes``) and ``extension`` (registration). Import it as a subpackage of the pack
(``<pack>.nodes``): ComfyUI has a top-level module named ``nodes``.
"""
