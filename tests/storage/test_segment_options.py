"""The segment backend through its plugin entry point, and its options."""
from __future__ import annotations

import pytest

from keyval.errors import ConfigError
from keyval.plugin_api.loading import build_plugin_manager, choose_storage
from keyval.raft.types import Entry
from keyval_plugins.storage.segment.options import SegmentOptions, parse_options


def test_opened_by_name_through_the_plugin_manager(tmp_path):
    backend = choose_storage(build_plugin_manager(), "segment")
    store = backend.factory(str(tmp_path), {"segment_size": "1KiB", "snapshots_keep": 3})
    store.append([Entry(1, 1, data=b"x")])
    store.close()
    assert (tmp_path / "log").is_dir() and (tmp_path / "snapshots").is_dir()
    assert store.options == SegmentOptions(segment_size=1024, snapshots_keep=3)


def test_needs_a_data_dir():
    backend = choose_storage(build_plugin_manager(), "segment")
    with pytest.raises(ConfigError, match="needs a data directory"):
        backend.factory(None, {})


def test_defaults():
    assert parse_options({}) == SegmentOptions(segment_size=64 << 20, snapshots_keep=2, snapshot_level=3,
                                               cache_bytes=16 << 20)


@pytest.mark.parametrize("raw,value", [(4096, 4096), ("4096", 4096), ("64MiB", 64 << 20), ("512 kb", 512 << 10),
                                       ("1G", 1 << 30)])
def test_sizes_take_units(raw, value):
    assert parse_options({"segment_size": raw}).segment_size == value


@pytest.mark.parametrize("options,message", [
    ({"segmentsize": 1, "keep": 2}, "segment storage: unknown options keep, segmentsize; known: cache_bytes, "
                                    "segment_size, snapshot_level, snapshots_keep"),
    ({"sync": True}, "segment storage: unknown option sync; known: "),
    ({"segment_size": "lots"}, "option segment_size must be a byte count such as 67108864 or '64MiB', not 'lots'"),
    ({"segment_size": 10}, "option segment_size must be at least 64, not 10"),
    ({"snapshots_keep": 0}, "option snapshots_keep must be at least 1, not 0"),
    ({"snapshots_keep": "2MiB"}, "option snapshots_keep must be a whole number, not '2MiB'"),
    ({"snapshot_level": 23}, "option snapshot_level must be between 1 and 22, not 23"),
    ({"cache_bytes": True}, "option cache_bytes must be a byte count"),
])
def test_bad_options_are_one_clear_line(options, message):
    with pytest.raises(ConfigError) as err:
        parse_options(options)
    assert message in str(err.value) and "\n" not in str(err.value)
