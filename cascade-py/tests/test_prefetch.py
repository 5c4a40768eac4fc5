"""Prefetch and asynchronous batch gets: blocks moved from the file tier into shared
memory in the background read back the bytes stored, handles report, wait, cancel and
work from asyncio and from many threads."""

import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cascade
from conftest import KIB, MIB, has_kind, make_config, random_block

pytestmark = pytest.mark.skipif(
    not (has_kind("shm") and has_kind("file")), reason="this build has no shm or no file tier"
)

BLOCK = 128 * KIB


@pytest.fixture
def tiered(tmp_path, rng):
    """A 2 MiB shm tier over a file tier holding 48 blocks, the first 32 of them (at
    least) in the file tier; reads do not promote, so blocks stay where they are."""
    config = make_config(
        tmp_path, shm_bytes=2 * MIB, lustre_path=str(tmp_path / "files"), promote_on_read=False
    )
    store = cascade.CascadeStore(config)
    assert store.tiers == ["shm", "lustre"]
    blocks = [random_block(rng, BLOCK) for _ in range(48)]
    ids = cascade.compute_block_ids(blocks)
    # Two batches, so the first 32 are older than every block of the second and are the
    # ones moved down: within one parallel batch the order blocks land in (and so which
    # stay in shm) depends on the host's threads, and a test that prefetches ids[:4]
    # would find some of them already resident on a large host.
    store.put_batch(ids[:32], blocks[:32])
    store.put_batch(ids[32:], blocks[32:])
    assert store.get_stats()["tiers"][1]["blocks"] >= 32
    yield store, ids, blocks
    store.close()


def read_all(store, ids):
    outs = [np.zeros(BLOCK, np.uint8) for _ in ids]
    assert store.get_batch(ids, outs) == [BLOCK] * len(ids)
    return outs


def test_prefetched_blocks_move_into_shm_and_read_back_the_bytes_stored(tiered):
    store, ids, blocks = tiered
    before = store.get_stats()["tiers"][0]["blocks"]
    handle = store.prefetch(ids[:8])
    assert len(handle) == 8
    progress = handle.result(timeout=60)
    assert progress == {"blocks": 8, "ready": 8, "missing": 0, "failed": 0, "cancelled": 0, "pending": 0}
    assert handle.done() and handle.ready == 8
    assert handle.statuses() == ["moved"] * 8
    assert handle.errors() == []
    stats = store.get_stats()
    assert stats["prefetched"] == 8
    # The prefetched blocks took room like any put: shm holds no more than it did.
    assert stats["tiers"][0]["blocks"] <= max(before, 8) + 8
    assert stats["tiers"][0]["used_bytes"] <= stats["tiers"][0]["capacity_bytes"]
    for block, out in zip(blocks[:8], read_all(store, ids[:8])):
        assert np.array_equal(block, out)
    stats = store.get_stats()
    assert stats["prefetch_hits"] == 8
    assert stats["tiers"][0]["hits"] >= 8
    assert "cascade_prefetch_hits_total 8" in store.metrics_text()


def test_missing_ids_are_counted_missing(tiered):
    store, ids, _ = tiered
    handle = store.prefetch(["1" * 32, ids[0]])
    assert handle.wait(timeout=60)
    assert handle.statuses() == ["missing", "moved"]
    assert handle.progress()["missing"] == 1
    assert store.get_stats()["misses"] == 0


def test_a_named_tier_and_an_unknown_one(tiered):
    store, ids, _ = tiered
    assert store.prefetch(ids[:2], tier="shm").result(timeout=60)["ready"] == 2
    assert store.prefetch(ids[2:4], tier=0).result(timeout=60)["ready"] == 2
    # Already faster than the file tier: stays.
    resident = store.prefetch(ids[:2], tier="lustre")
    assert resident.wait(timeout=60)
    assert resident.statuses() == ["resident"] * 2
    with pytest.raises(cascade.InvalidInputError, match="no tier named"):
        store.prefetch(ids[:2], tier="nvme")
    with pytest.raises(cascade.InvalidInputError):
        store.prefetch(ids[:2], tier=7)


def test_a_prefix_prefetch_takes_the_stored_leading_keys(tiered):
    store, ids, _ = tiered
    store.remove(ids[5])
    handle = store.prefetch_prefix(ids[:8])
    assert len(handle) == 5 == store.lookup_prefix(ids[:8])
    assert handle.result(timeout=60)["ready"] == 5


def test_a_cancelled_prefetch_leaves_every_block_readable(tiered):
    store, ids, blocks = tiered
    handle = store.prefetch(ids[:32])
    handle.cancel()
    progress = handle.result(timeout=60)
    assert progress["ready"] + progress["cancelled"] == 32
    assert set(handle.statuses()) <= {"moved", "cancelled"}
    assert store.get_stats()["prefetched"] == handle.statuses().count("moved")
    for block, out in zip(blocks, read_all(store, ids)):
        assert np.array_equal(block, out)


def test_a_detached_prefetch_runs_on_after_the_handle_is_dropped(tiered):
    store, ids, _ = tiered
    handle = store.prefetch(ids[:4])
    handle.detach()
    del handle
    gc.collect()
    probe = store.prefetch(ids[:4])
    assert probe.wait(timeout=60)
    assert set(probe.statuses()) <= {"moved", "resident"}
    assert store.get_stats()["prefetched"] == 4


def test_an_async_batch_get_returns_what_get_batch_does(tiered):
    store, ids, blocks = tiered
    asked = ids[:40] + ["2" * 32]
    outs = [np.zeros(BLOCK, np.uint8) for _ in asked]
    handle = store.get_batch_async(asked, outs)
    assert handle.wait(timeout=60) and handle.done()
    results = handle.result()
    sync_outs = [np.zeros(BLOCK, np.uint8) for _ in asked]
    assert results == store.get_batch(asked, sync_outs) == [BLOCK] * 40 + [None]
    for block, out, again in zip(blocks[:40], outs, sync_outs):
        assert np.array_equal(block, out) and np.array_equal(block, again)
    # Rows of one array, as get_batch takes them.
    pool = np.zeros((8, BLOCK), np.uint8)
    assert store.get_batch_async(ids[:8], pool).result(timeout=60) == [BLOCK] * 8
    assert np.array_equal(pool, np.stack(blocks[:8]))


def test_an_async_batch_get_raises_the_first_failure_on_result(tiered):
    store, ids, _ = tiered
    outs = [np.zeros(BLOCK, np.uint8), np.zeros(KIB, np.uint8)]
    handle = store.get_batch_async(ids[:2], outs)
    with pytest.raises(cascade.InvalidInputError) as raised:
        handle.result(timeout=60)
    assert raised.value.context["index"] == "1"
    with pytest.raises(cascade.InvalidInputError):
        store.get_batch_async(ids[:2], [outs[0], outs[0]])


def test_dropping_an_async_batch_get_never_leaves_a_half_written_output(tiered):
    store, ids, blocks = tiered
    outs = [np.zeros(BLOCK, np.uint8) for _ in ids]
    handle = store.get_batch_async(ids, outs)
    del handle
    gc.collect()
    # Dropped: the reads not started were cancelled, the others finished first.
    for block, out in zip(blocks, outs):
        assert np.array_equal(out, block) or not out.any()


def test_handles_are_awaitable_from_asyncio(tiered):
    store, ids, blocks = tiered

    async def load():
        prefetch = store.prefetch(ids[8:16])
        outs = [np.zeros(BLOCK, np.uint8) for _ in ids[:8]]
        sizes = await store.get_batch_async(ids[:8], outs)
        progress = await prefetch
        return sizes, outs, progress

    sizes, outs, progress = asyncio.run(load())
    assert sizes == [BLOCK] * 8
    assert progress["ready"] == 8
    for block, out in zip(blocks, outs):
        assert np.array_equal(block, out)


def test_many_handles_from_many_threads(tiered):
    store, ids, blocks = tiered
    by_id = dict(zip(ids, blocks))

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(10):
            picked = list(rng.choice(ids, 12, replace=False))
            prefetch = store.prefetch(picked[6:])
            outs = [np.zeros(BLOCK, np.uint8) for _ in picked]
            assert store.get_batch_async(picked, outs).result(timeout=60) == [BLOCK] * 12
            for block_id, out in zip(picked, outs):
                assert np.array_equal(by_id[block_id], out)
            assert prefetch.wait(timeout=60)
            assert set(prefetch.statuses()) <= {"moved", "resident"}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    stats = store.get_stats()
    assert stats["prefetch_hits"] + stats["prefetch_wasted"] <= stats["prefetched"]
    for block, out in zip(blocks, read_all(store, ids)):
        assert np.array_equal(block, out)


def test_max_prefetches_is_a_config_setting(tmp_path):
    config = make_config(tmp_path, max_prefetches=3)
    assert config.max_prefetches == 3
    assert "max_prefetches = 3" in config.to_toml()
    with pytest.raises(cascade.ConfigError, match="max_prefetches"):
        cascade.CascadeStore(make_config(tmp_path, max_prefetches=0))
