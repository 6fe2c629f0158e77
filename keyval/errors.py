"""Exceptions KeyVal raises to its users; each message is one sentence a person can act on."""
from __future__ import annotations


class KeyvalError(Exception):
    """Base of every error KeyVal raises on purpose."""


class ConfigError(KeyvalError):
    """A node's configuration (flags or config file) is invalid."""


class PluginError(KeyvalError):
    """A plugin could not be loaded or returned something unusable."""


class UnknownBackend(PluginError):
    """No plugin provides a backend of the requested name."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        names = ", ".join(self.available) or "none"
        super().__init__(f"unknown {kind} backend {name!r}; available: {names}")
