"""The key-value state machine every node applies in log order.

``store`` holds the state and its commands (``KVStore``, the ``encode_*`` functions),
``snapshot`` its snapshot format, ``restore`` a restore staged through the log. Callers
import from here; the modules import each other, never this package.
"""
from keyval.kv.store import (
    CommandError,
    KVStore,
    Limits,
    WriteResult,
    check_limits,
    encode_delete,
    encode_meta,
    encode_put,
    encode_restore_abort,
    encode_restore_begin,
    encode_restore_chunk,
    encode_restore_commit,
)

__all__ = [
    "CommandError", "KVStore", "Limits", "WriteResult", "check_limits", "encode_delete", "encode_meta",
    "encode_put", "encode_restore_abort", "encode_restore_begin", "encode_restore_chunk", "encode_restore_commit",
]
