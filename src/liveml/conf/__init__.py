"""liveml's packaged Hydra config groups: trainer, logger, paths, monitor, hydra/launcher.

A project's conf/ holds only its primary configs and its tasks' groups; Hydra finds these
through the search path plugin `hydra_plugins.liveml_searchpath` (`pkg://liveml.conf`), after
the project's conf/, so a project file of the same name (conf/trainer/cpu.yaml) wins.
"""
