"""Two stores sharing one file-tier directory (as two nodes on a shared file system):
refresh() shows each what the other stored and removed, without reopening."""

import numpy as np
import pytest

import cascade
from conftest import KIB, has_kind, random_block

pytestmark = pytest.mark.skipif(not has_kind("file"), reason="this build has no file tier")


def file_store(directory, writer):
    text = (
        "[[tiers]]\n"
        'kind = "file"\n'
        f'path = "{directory}"\n'
        'capacity = "64 MiB"\n'
        f'writer_id = "{writer}"\n'
        "background_compaction = false\n"
    )
    return cascade.CascadeStore.from_toml_str(text)


def test_refresh_shows_the_other_writers_blocks_and_removals(tmp_path, rng):
    directory = tmp_path / "shared"
    with file_store(directory, "b") as b, file_store(directory, "a") as a:
        own = random_block(rng, 8 * KIB)
        own_id = cascade.compute_block_id(own)
        assert b.put(own_id, own)
        blocks = [random_block(rng, 16 * KIB) for _ in range(4)]
        ids = cascade.compute_block_ids(blocks)
        for block_id, block in zip(ids, blocks):
            assert a.put(block_id, block)
        out = np.zeros(16 * KIB, np.uint8)
        assert b.get(ids[0], out) == (False, 0), "not seen before refresh"

        report = b.refresh()
        assert report["added"] == 4 and report["removed"] == 0
        assert report["tiers"][0]["added"] == 4
        for block_id, block in zip(ids, blocks):
            assert b.get(block_id, out) == (True, 16 * KIB)
            assert np.array_equal(out, block)
        assert b.get(own_id, out) == (True, 8 * KIB), "its own block is kept"
        assert np.array_equal(out[: 8 * KIB], own)

        assert a.remove(ids[1])
        report = b.refresh()
        assert report["added"] == 0 and report["removed"] == 1
        assert ids[1] not in b and len(b) == 4
        assert b.refresh() == {
            "added": 0,
            "removed": 0,
            "tiers": [{"name": "file0", "added": 0, "replaced": 0, "removed": 0}],
        }


def test_refresh_of_a_store_nobody_shares_reports_nothing(store, rng):
    block = random_block(rng, 4 * KIB)
    store.put(cascade.compute_block_id(block), block)
    report = store.refresh()
    assert report["added"] == 0 and report["removed"] == 0
    assert len(store) == 1
