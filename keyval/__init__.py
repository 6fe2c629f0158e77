"""KeyVal: a strongly consistent key-value store replicated with Raft.

Kept light on purpose: ``import keyval`` (which every plugin does for ``keyval.hookimpl``)
must not pull in the runtime.
"""
from keyval.hookspecs import hookimpl

__version__ = "0.2.0"

__all__ = ["__version__", "hookimpl"]
