"""Hydra search path plugin: liveml's packaged config groups (`pkg://liveml.conf`) join every
Hydra composition in the environment: liveml's own (`liveml params`, `python -m
liveml.training`) and DVC's (`dvc exp run -S ...`), which discovers plugins the same way."""
