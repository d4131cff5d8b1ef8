"""Serving: the exported models behind an HTTP API (`liveml serve`)."""
