"""The lab: the yardstick for the method, not part of what a ComfyUI user runs.

Edit cases with exact ground truth (``edit_cases``), their scoring
(``shapes_eval``, ``bench``), cost measurement by wrapping a backend
(``instrument``, ``perf``), the shapes model's training and report
(``train_shapes``, ``model_report``), and their command line
(``python -m dragon_lab``). It imports the method (``dragon_core``) and the demo
model (``dragon_demo``); neither imports it.
"""
