"""The plugin class Hydra discovers (any `hydra_plugins.*` module is scanned for plugins)."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# Appended: the project's conf/ (the primary config dir) comes first, so its files win.
LIVEML_CONF = "pkg://liveml.conf"


class LivemlSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="liveml", path=LIVEML_CONF)
