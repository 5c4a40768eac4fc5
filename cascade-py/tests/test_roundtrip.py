"""Blocks come back byte for byte, from every kind of buffer, into every kind of buffer."""

import array
import hashlib

import numpy as np
import pytest

import cascade
from conftest import KIB, has_kind, make_config, random_block


def test_documented_quickstart(tmp_path):
    config = cascade.CascadeConfig()
    config.shm_capacity_bytes = 8 * 1024**2
    config.shm_path = str(tmp_path / "pool.shm")
    store = cascade.CascadeStore(config)
    data = np.random.randint(0, 256, 128 * 1024, dtype=np.uint8)
    block_id = cascade.compute_block_id(data)
    assert store.put(block_id, data) is True
    out = np.zeros_like(data)
    found, size = store.get(block_id, out)
    assert (found, size) == (True, data.nbytes)
    assert np.array_equal(out, data)


def test_compute_block_id_is_sha256_prefix(rng):
    data = random_block(rng)
    want = hashlib.sha256(data.tobytes()).hexdigest()[:32]
    assert cascade.compute_block_id(data) == want
    assert cascade.compute_block_id(data.tobytes()) == want
    assert cascade.compute_block_id(memoryview(bytearray(data.tobytes()))) == want
    assert cascade.compute_block_ids([data, b"", b"abc"]) == [
        want,
        hashlib.sha256(b"").hexdigest()[:32],
        hashlib.sha256(b"abc").hexdigest()[:32],
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b,
        lambda b: b.tobytes(),
        lambda b: bytearray(b.tobytes()),
        lambda b: memoryview(b.tobytes()),
        lambda b: b.view(np.float16).reshape(64, -1),
        lambda b: array.array("B", b.tobytes()),
    ],
    ids=["numpy", "bytes", "bytearray", "memoryview", "float16-2d", "array"],
)
def test_any_buffer_goes_in(store, rng, make):
    block = random_block(rng, 64 * KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, make(block))
    out = bytearray(block.nbytes)
    assert store.get(block_id, out) == (True, block.nbytes)
    assert bytes(out) == block.tobytes()


def test_writable_outputs_of_every_kind(store, rng):
    block = random_block(rng, 4 * KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, block)
    big = np.zeros(8 * KIB, dtype=np.uint8)
    assert store.get(block_id, big) == (True, 4 * KIB)
    assert np.array_equal(big[: 4 * KIB], block)
    assert not big[4 * KIB :].any(), "bytes past the block must stay untouched"
    ba = bytearray(4 * KIB)
    store.get(block_id, memoryview(ba))
    assert bytes(ba) == block.tobytes()
    typed = np.zeros(2 * KIB, dtype=np.float16)
    store.get(block_id, typed)
    assert typed.tobytes() == block.tobytes()


def test_missing_block_is_not_found(store):
    out = np.zeros(16, dtype=np.uint8)
    assert store.get("0" * 32, out) == (False, 0)
    assert not store.contains("0" * 32)
    assert "0" * 32 not in store


def test_contains_size_remove_ids_len(store, rng):
    blocks = [random_block(rng, n * KIB) for n in (1, 2, 3)]
    ids = [store.put_content(b) for b in blocks]
    assert ids == [cascade.compute_block_id(b) for b in blocks]
    assert len(store) == 3
    assert sorted(store.ids()) == sorted(ids)
    assert all(store.contains(i) and i in store for i in ids)
    assert store.size_of(ids[1]) == 2 * KIB
    assert store.remove(ids[1]) is True
    assert store.remove(ids[1]) is False
    assert store.size_of(ids[1]) is None
    assert len(store) == 2
    store.clear()
    assert len(store) == 0 and store.ids() == []


def test_empty_block_round_trips(store):
    block_id = cascade.compute_block_id(b"")
    store.put(block_id, b"")
    assert store.get(block_id, bytearray(0)) == (True, 0)


def test_uppercase_id_names_the_same_block(store, rng):
    block = random_block(rng, KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id.upper(), block)
    assert store.contains(block_id)


def test_dedup_stores_once(store, rng):
    block = random_block(rng)
    block_id = cascade.compute_block_id(block)
    assert store.put(block_id, block)
    assert store.put(block_id, block)
    stats = store.get_stats()
    assert stats["blocks"] == 1
    assert stats["puts"] == 1
    assert stats["dedup_hits"] == 1
    assert stats["dedup_bytes_saved"] == block.nbytes


def test_without_dedup_a_put_replaces(tmp_path, rng):
    store = cascade.CascadeStore(make_config(tmp_path, dedup_enabled=False))
    first, second = random_block(rng, KIB), random_block(rng, 2 * KIB)
    block_id = "ab" * 16
    store.put(block_id, first)
    store.put(block_id, second)
    out = np.zeros(2 * KIB, dtype=np.uint8)
    assert store.get(block_id, out) == (True, 2 * KIB)
    assert np.array_equal(out, second)
    assert store.get_stats()["dedup_hits"] == 0


def test_stats_dict_shape(store, rng):
    block = random_block(rng, KIB)
    store.put(cascade.compute_block_id(block), block)
    stats = store.get_stats()
    for key in ("blocks", "bytes", "hits", "misses", "puts", "dedup_hits", "evictions", "tiers"):
        assert key in stats
    tier = stats["tiers"][0]
    assert tier["name"] == store.tiers[0]
    assert tier["capacity_bytes"] == 16 * 1024**2
    assert tier["used_bytes"] >= KIB


def test_hasher_blake3_changes_put_content_ids(tmp_path, rng):
    block = random_block(rng, KIB)
    store = cascade.CascadeStore(make_config(tmp_path, hasher="blake3"))
    assert store.put_content(block) != cascade.compute_block_id(block)


@pytest.mark.skipif(not has_kind("file"), reason="this build has no file tier")
def test_write_through_store_keeps_its_blocks_across_reopen(tmp_path, rng):
    """write_policy reaches the store. Shared memory is itself persistent (its pool file
    outlives the process, not a reboot), so write-through adds no copy below it: that
    copy is made for blocks placed in a GPU tier (test_store_cuda.py). After flush and
    close, a store reopened on the same tiers has every block."""
    files = tmp_path / "files"
    config = make_config(tmp_path, lustre_path=str(files), write_policy="write_through")
    assert config.write_policy == "write_through"
    assert 'write_policy = "write_through"' in config.to_toml()
    assert "write_policy" in repr(config)
    blocks = [random_block(rng, 16 * KIB) for _ in range(8)]
    ids = cascade.compute_block_ids(blocks)
    with cascade.CascadeStore(config) as s:
        assert s.put_batch(ids, blocks) == 8
        s.flush()
        stats = s.get_stats()
        assert stats["tiers"][0]["blocks"] == 8
        assert stats["tiers"][1]["copies"] == 0, "shared memory is already persistent"
    with cascade.CascadeStore(config) as s:
        for block_id, block in zip(ids, blocks):
            out = np.zeros(16 * KIB, np.uint8)
            assert s.get(block_id, out) == (True, 16 * KIB)
            assert np.array_equal(out, block)


def test_write_policy_is_checked(tmp_path):
    assert cascade.CascadeConfig().write_policy == "write_back"
    with pytest.raises(cascade.ConfigError, match="write_through"):
        cascade.CascadeStore(make_config(tmp_path, write_policy="sometimes"))
