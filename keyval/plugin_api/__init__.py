"""What a plugin author implements, and how plugins are found.

``storage`` and ``transport`` are the contracts (``typing.Protocol``s whose docstrings hold
every promise), ``backends`` the descriptors a plugin's hook returns, ``contracts`` the check
``keyval serve`` makes of a backend before relying on it, ``loading`` the pluggy manager that
loads the entry-point groups ``keyval.storage`` and ``keyval.transport``. The hooks themselves
are specified in ``keyval.hookspecs``.
"""
