"""Persistent tiers: blocks survive the store being dropped; overflow spills from shared
memory into the file tier."""

import gc

import numpy as np
import pytest

import cascade
from conftest import KIB, MIB, has_kind, make_config, random_block

needs_shm = pytest.mark.skipif(not has_kind("shm"), reason="this build has no shm tier")
needs_file = pytest.mark.skipif(not has_kind("file"), reason="this build has no file tier")


@needs_shm
def test_reopen_after_the_store_is_dropped(tmp_path, rng):
    blocks = [random_block(rng, 64 * KIB) for _ in range(8)]
    ids = cascade.compute_block_ids(blocks)
    store = cascade.CascadeStore(make_config(tmp_path))
    store.put_batch(ids, blocks)
    store.flush()
    del store
    gc.collect()
    again = cascade.CascadeStore(make_config(tmp_path))
    assert len(again) == len(blocks)
    outs = [np.zeros(64 * KIB, np.uint8) for _ in blocks]
    assert again.get_batch(ids, outs) == [64 * KIB] * len(blocks)
    for block, out in zip(blocks, outs):
        assert np.array_equal(block, out)


@needs_shm
def test_reopen_after_close(tmp_path, rng):
    block = random_block(rng, KIB)
    with cascade.CascadeStore(make_config(tmp_path)) as store:
        block_id = store.put_content(block)
    with cascade.CascadeStore(make_config(tmp_path)) as store:
        out = np.zeros(KIB, np.uint8)
        assert store.get(block_id, out) == (True, KIB)
        assert np.array_equal(out, block)


@needs_shm
@needs_file
def test_overflow_from_shm_into_the_file_tier(tmp_path, rng):
    config = make_config(tmp_path, shm_bytes=2 * MIB, lustre_path=str(tmp_path / "lustre"))
    store = cascade.CascadeStore(config)
    assert store.tiers == ["shm", "lustre"]
    blocks = [random_block(rng, 128 * KIB) for _ in range(48)]  # 6 MiB: three times shm
    ids = cascade.compute_block_ids(blocks)
    for block_id, block in zip(ids, blocks):
        store.put(block_id, block)
    stats = store.get_stats()
    shm, lustre = stats["tiers"]
    assert shm["used_bytes"] <= shm["capacity_bytes"]
    assert lustre["blocks"] > 0 and stats["demotions"] > 0
    assert stats["blocks"] == len(blocks)
    outs = [np.zeros(128 * KIB, np.uint8) for _ in blocks]
    assert store.get_batch(ids, outs) == [128 * KIB] * len(blocks)
    for block, out in zip(blocks, outs):
        assert np.array_equal(block, out)
    # Both tiers persist: everything is still there after a reopen.
    store.close()
    again = cascade.CascadeStore(config)
    assert len(again) == len(blocks)
