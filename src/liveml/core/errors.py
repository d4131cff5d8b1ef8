"""Errors a user sees about their setup: each message names the problem and the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the key, what is allowed and the fix."""
