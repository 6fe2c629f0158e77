"""The storage conformance suite: checks a storage backend against every promise it makes.

A plugin author subclasses ``StorageConformance`` in a pytest test module and names the
backend; pytest then runs every check against it::

    from keyval.testing.storage_conformance import StorageConformance

    class TestMyStore(StorageConformance):
        backend = "mystore"      # the name your keyval_storage_backends() hook returns
        options = {}             # handed to your factory as storage options
        persistent = True        # False for a memory-only backend: skips the reopen checks
        snapshot_retention = 2   # how many snapshots you keep; None not to check

        def corrupt_newest_snapshot(self, data_dir):   # optional: damage it, to check that
            ...                                        # a corrupt snapshot is never loaded

        def corrupt_log(self, data_dir):               # optional: damage a synced entry, to
            ...                                        # check it is refused or cut, never read

With ``backend`` set, storage is opened the way a node opens it: through the real plugin
manager and your package's entry point, so a broken registration fails here too. Override
``open_storage(data_dir)`` instead to open it any other way.

The promises are the docstrings of ``keyval/plugin_api/storage.py`` and ``keyval/raft/storage.py``.
Crashes are real, of two kinds. A process crash: a forked child writes through the backend
and dies by SIGKILL (no close, no flush; the page cache survives), and the test opens the
same directory again. A power loss (``keyval.testing.power_loss``; Linux and root): the
data dir is on a loop-mounted ext4 that is shut down without flushing, so whatever was
not fsynced is gone, as after a power cut.

Load KeyVal's pytest plugin so that a failing check shows the values it compared: it loads
by itself once KeyVal is installed (the ``pytest11`` entry point ``keyval``), and
``pytest -p keyval.testing.pytest_plugin`` loads it by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from keyval.testing.crash import run_then_kill
from keyval.testing.power_loss import PowerLossDisk, run_then_cut_power
from keyval.testing.storage_concurrency_checks import ConcurrencyChecks
from keyval.testing.storage_config_checks import ConfigChecks
from keyval.testing.storage_damage_checks import DamageChecks
from keyval.testing.storage_durability_checks import DurabilityChecks
from keyval.testing.storage_log_checks import LogChecks
from keyval.testing.storage_power_checks import PowerLossChecks
from keyval.testing.storage_snapshot_checks import SnapshotChecks

__all__ = ["StorageConformance"]


class _Instances:
    """The storage objects a test opened on its data dir; closed when the test ends."""

    def __init__(self, suite: "StorageConformance", data_dir: str) -> None:
        self.suite = suite
        self.data_dir = data_dir
        self.open_ones: list[Any] = []

    def open(self) -> Any:
        storage = self.suite.open_storage(self.data_dir)
        self.open_ones.append(storage)
        return storage

    def reopen(self, storage: Any) -> Any:
        """Close cleanly and open again."""
        self.close(storage)
        return self.open()

    def close(self, storage: Any) -> None:
        self.open_ones.remove(storage)
        storage.close()

    def close_all(self) -> None:
        while self.open_ones:
            self.open_ones.pop().close()


class _PowerCut:
    """A data dir on a disk whose power a check can cut, and the storages opened on it."""

    def __init__(self, disk: PowerLossDisk, storages: _Instances) -> None:
        self.disk = disk
        self.storages = storages


class StorageConformance(LogChecks, SnapshotChecks, ConfigChecks, ConcurrencyChecks, DurabilityChecks,
                         DamageChecks, PowerLossChecks):
    """Subclass as ``Test<Something>`` and set ``backend`` (or override ``open_storage``)."""

    backend: str | None = None
    options: dict[str, Any] = {}
    persistent: bool = True
    snapshot_retention: int | None = None
    #: Rounds of kill-mid-write (and power-cut-mid-write) in the crash checks; more find more, slower.
    crash_rounds: int = 3
    #: Readies the loop thread handles while the other threads run, in the thread check: a
    #: race shows with a probability that grows with them; about a second at the default.
    concurrency_rounds: int = 120

    def open_storage(self, data_dir: str) -> Any:
        """Return an open ``keyval.plugin_api.storage.Storage`` on ``data_dir`` (which exists)."""
        if self.backend is None:
            raise NotImplementedError(f"{type(self).__name__}: set `backend = NAME` or override open_storage()")
        from keyval.plugin_api.loading import build_plugin_manager, choose_storage

        chosen = choose_storage(build_plugin_manager(), self.backend)
        return chosen.factory(data_dir, dict(self.options))

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def data_dir(self, tmp_path: Path) -> str:
        path = tmp_path / "data"
        path.mkdir()
        return str(path)

    @pytest.fixture
    def storages(self, data_dir: str):
        instances = _Instances(self, data_dir)
        yield instances
        instances.close_all()

    @pytest.fixture
    def store(self, storages: _Instances) -> Any:
        return storages.open()

    @pytest.fixture
    def power_cut(self, tmp_path: Path):
        self.require_persistent()
        with PowerLossDisk(tmp_path) as disk:
            storages = _Instances(self, disk.data_dir)
            try:
                yield _PowerCut(disk, storages)
            finally:
                storages.close_all()  # before the disk goes

    def require_persistent(self) -> None:
        if not self.persistent:
            pytest.skip("memory-only backend (persistent = False): nothing survives a reopen")

    def corrupt_newest_snapshot(self, data_dir: str) -> None:
        """Damage the newest snapshot's stored data (flip a byte, say) while the storage is
        closed. Override it to have the check that a corrupt snapshot is skipped, never
        loaded, run against your backend; otherwise that check is skipped."""
        pytest.skip("override corrupt_newest_snapshot() to check that a damaged snapshot is never loaded")

    def corrupt_log(self, data_dir: str) -> None:
        """Damage the stored bytes of synced log entries in the middle of the log (the log
        holds entries 1..2000 of 200 bytes each; flip a byte of entry 1000's record, say),
        while the storage is closed. Override it to have the check that damaged entries are
        refused (``CorruptLog``) or cut off, never read back, run against your backend;
        otherwise that check is skipped."""
        pytest.skip("override corrupt_log() to check that damaged log entries are never read back as data")

    # -- crash machinery -----------------------------------------------------------------
    def crash_after(self, writer: Callable[[Any, Callable], None], data_dir: str) -> list:
        """Run ``writer(storage, report)`` in a child that dies by SIGKILL when it returns;
        return what it passed to ``report``."""
        return run_then_kill(lambda: self.open_storage(data_dir), writer, Path(data_dir).parent)

    def kill_during(self, writer: Callable[[Any, Callable], None], data_dir: str, seconds: float) -> list:
        """Run ``writer`` in a child and SIGKILL it ``seconds`` after it opened the storage."""
        return run_then_kill(lambda: self.open_storage(data_dir), writer, Path(data_dir).parent, seconds)

    def cut_power_after(self, writer: Callable[[Any, Callable], None], power_cut: _PowerCut,
                        seconds: float | None = None) -> list:
        """Run ``writer`` in a child over ``power_cut``'s data dir; cut the power when it
        returns (or ``seconds`` after it opened the storage) and turn it on again."""
        disk = power_cut.disk
        return run_then_cut_power(lambda: self.open_storage(disk.data_dir), writer, disk, disk.image.parent, seconds)
