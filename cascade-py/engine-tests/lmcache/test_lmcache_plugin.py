"""The Cascade plugin driven through LMCache's own StorageManager on CPU: LMCache loads
it from its config (storage_plugins + module_path/class_name), allocates chunks in its
LocalCPUBackend, and stores and retrieves them through the plugin."""

import time
from types import SimpleNamespace

import cascade
import pytest
import torch
from helpers import corrupt_block, write_toml
from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig
from lmcache.v1.event_manager import EventManager
from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.storage_backend.storage_manager import StorageManager

from cascade.integrations.lmcache import CascadeBackend

SHAPE = torch.Size([2, 2, 256, 64])  # [K/V, layers, tokens, hidden]: 128 KiB of bf16
NAME = "cascade"


def manager(
    toml, model="llama", namespace=None, async_put=False, local_cpu_gb=0.25, readahead_mib=None
):
    extra = {
        f"storage_plugin.{NAME}.module_path": "cascade.integrations.lmcache",
        f"storage_plugin.{NAME}.class_name": "CascadeBackend",
        f"storage_plugin.{NAME}.config": str(toml),
        f"storage_plugin.{NAME}.async_put": async_put,
    }
    if readahead_mib is not None:
        extra[f"storage_plugin.{NAME}.readahead_mib"] = readahead_mib
    if namespace is not None:
        extra[f"storage_plugin.{NAME}.namespace"] = namespace
    config = LMCacheEngineConfig.from_dict(
        {
            "chunk_size": 256,
            "local_cpu": True,
            "max_local_cpu_size": local_cpu_gb,
            "storage_plugins": [NAME],
            "extra_config": extra,
        }
    )
    metadata = LMCacheMetadata(
        model_name=model,
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.bfloat16,
        kv_shape=(2, 2, 256, 1, 64),
        role="worker",
    )
    return StorageManager(config, metadata, EventManager())


def key(i, model="llama"):
    return CacheEngineKey(model, 1, 0, 0x9E3779B97F4A7C15 * (i + 1) % (1 << 63), torch.bfloat16)


def chunks(sm, n, seed=0, shape=SHAPE):
    """n chunks allocated by LMCache, filled with random bytes; and copies of their bytes."""
    gen = torch.Generator().manual_seed(seed)
    objs = sm.batched_allocate(shape, torch.bfloat16, n, MemoryFormat.KV_2LTD)
    assert objs is not None
    expected = []
    for obj in objs:
        raw = obj.tensor.view(torch.int16)
        raw.copy_(torch.randint(-(2**15), 2**15, raw.shape, dtype=torch.int16, generator=gen))
        expected.append(bytes(obj.byte_array))
    return objs, expected


def put(sm, keys, objs):
    sm.batched_put(keys, objs, location=NAME)


def test_lmcache_loads_the_plugin_from_its_config(tmp_path):
    sm = manager(write_toml(tmp_path))
    try:
        assert isinstance(sm.storage_backends[NAME], CascadeBackend)
        assert sm.storage_backends[NAME].store.tiers == ["shm", "file"]
    finally:
        sm.close()


def test_chunks_round_trip_through_the_storage_manager(tmp_path):
    sm = manager(write_toml(tmp_path))
    try:
        keys = [key(i) for i in range(40)]
        objs, expected = chunks(sm, 40)
        put(sm, keys, objs)
        assert sm.contains(keys[0], search_range=[NAME]) == NAME
        hits, mapping = sm.batched_contains(keys, search_range=[NAME])
        assert hits == 40 and mapping[NAME] == keys
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
        assert all(o.get_shape() == SHAPE and o.get_dtype() == torch.bfloat16 for o in got)
        one = sm.get(keys[7], location=NAME)
        assert bytes(one.byte_array) == expected[7]
    finally:
        sm.close()


def test_missing_chunks_are_misses_and_a_prefix_stops_at_the_first(tmp_path):
    sm = manager(write_toml(tmp_path))
    try:
        keys = [key(i) for i in range(6)]
        objs, expected = chunks(sm, 6)
        put(sm, keys[:3] + keys[4:], objs[:3] + objs[4:])
        assert sm.get(key(100), location=NAME) is None
        assert sm.batched_contains(keys, search_range=[NAME])[0] == 3
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got[:3]] == expected[:3]
        assert got[3:] == [None, None, None]
    finally:
        sm.close()


def test_async_puts_complete_and_read_back(tmp_path):
    sm = manager(write_toml(tmp_path), async_put=True)
    try:
        backend = sm.storage_backends[NAME]
        keys = [key(i) for i in range(16)]
        objs, expected = chunks(sm, 16)
        put(sm, keys, objs)
        deadline = time.monotonic() + 30
        while any(backend.exists_in_put_tasks(k) for k in keys) and time.monotonic() < deadline:
            time.sleep(0.01)
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
    finally:
        sm.close()


def test_chunks_survive_a_restart_of_lmcache(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    sm = manager(toml)
    keys = [key(i) for i in range(8)]
    try:
        objs, expected = chunks(sm, 8)
        put(sm, keys, objs)
    finally:
        sm.close()
    sm = manager(toml)  # a new process would see the same: records come from the store
    try:
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
        assert all(o.get_shape() == SHAPE for o in got)
    finally:
        sm.close()


def test_a_corrupt_chunk_is_a_miss_never_wrong_bytes(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    sm = manager(toml)
    keys = [key(i) for i in range(4)]
    try:
        objs, expected = chunks(sm, 4)
        put(sm, keys, objs)
    finally:
        sm.close()
    assert corrupt_block(tmp_path / "files", expected[2]) == 1
    sm = manager(toml)
    try:
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got[:2]] == expected[:2]
        assert got[2:] == [None, None]  # the prefix ends at the corrupt chunk
        assert sm.get(keys[2], location=NAME) is None
        assert bytes(sm.get(keys[3], location=NAME).byte_array) == expected[3]
        # The corrupt copy was dropped: storing the chunk again makes it a hit.
        objs, again = chunks(sm, 1, seed=0)
        put(sm, [keys[2]], [objs[0]])
        assert sm.get(keys[2], location=NAME) is not None
    finally:
        sm.close()


def test_namespaces_never_collide(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    k = key(1)
    stored = {}
    for model, tenant in [("llama", "a"), ("llama", "b"), ("mistral", "a")]:
        sm = manager(toml, model=model, namespace=tenant)
        try:
            # The same chunk hash under each namespace.
            assert sm.get(CacheEngineKey(model, 1, 0, k.chunk_hash, torch.bfloat16), location=NAME) is None
            objs, expected = chunks(sm, 1, seed=len(stored))
            put(sm, [CacheEngineKey(model, 1, 0, k.chunk_hash, torch.bfloat16)], objs)
            stored[(model, tenant)] = expected[0]
        finally:
            sm.close()
    assert len(set(stored.values())) == 3
    for (model, tenant), expected in stored.items():
        sm = manager(toml, model=model, namespace=tenant)
        try:
            got = sm.get(CacheEngineKey(model, 1, 0, k.chunk_hash, torch.bfloat16), location=NAME)
            assert bytes(got.byte_array) == expected
        finally:
            sm.close()


def test_removed_chunks_are_gone(tmp_path):
    sm = manager(write_toml(tmp_path))
    try:
        keys = [key(i) for i in range(3)]
        objs, _ = chunks(sm, 3)
        put(sm, keys, objs)
        assert sm.remove(keys[1], locations=[NAME]) >= 1
        assert sm.contains(keys[1], search_range=[NAME]) is None
        assert sm.get(keys[1], location=NAME) is None
    finally:
        sm.close()


def test_without_a_local_cpu_backend_the_plugin_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_CONFIG", str(write_toml(tmp_path)))
    backend = CascadeBackend(dst_device="cpu", config=None, metadata=None, local_cpu_backend=None)
    try:
        with pytest.raises(RuntimeError, match="LocalCPUBackend"):
            backend.get_allocator_backend()
    finally:
        backend.close()


def free_chunks(sm):
    """How many chunks of SHAPE LMCache's CPU pool can hand out now (without evicting)."""
    held = []
    while True:
        objs = sm.batched_allocate(
            SHAPE, torch.bfloat16, 1, MemoryFormat.KV_2LTD, eviction=False, busy_loop=False
        )
        if not objs:
            break
        held += objs
    for obj in held:
        obj.ref_count_down()
    return len(held)


def read_ahead_chunks(backend):
    """The chunks the plugin is reading ahead (white-box: to watch their release)."""
    return [step.objs[i] for step, i in backend._readahead._ahead.values()]


def wait_released(backend, objs):
    """Waits until the plugin gave every chunk of objs back (ref count 0)."""
    deadline = time.monotonic() + 30
    while any(o.get_ref_count() > 0 for o in objs) and time.monotonic() < deadline:
        backend._readahead.start()  # a later call gives back what finished reading
        time.sleep(0.01)
    assert [o.get_ref_count() for o in objs] == [0] * len(objs)


def stored(sm, n, seed=0):
    """n chunks stored in Cascade (and released by the caller); their keys and bytes."""
    keys = [key(i) for i in range(n)]
    objs, expected = chunks(sm, n, seed=seed)
    put(sm, keys, objs)
    for obj in objs:
        obj.ref_count_down()
    return keys, expected


def test_a_pinned_lookup_reads_ahead_and_retrieval_returns_the_same_bytes(tmp_path):
    sm = manager(write_toml(tmp_path, shm=False), local_cpu_gb=0.05)
    try:
        backend = sm.storage_backends[NAME]
        keys, expected = stored(sm, 40)
        free = free_chunks(sm)
        hits, mapping = sm.batched_contains(keys, search_range=[NAME], pin=True)
        assert hits == 40 and mapping[NAME] == keys
        # The 40 chunks are being read into LMCache's pool before it asks for them.
        assert free_chunks(sm) == free - 40
        got = []
        for s in range(0, 40, 16):  # LMCache retrieves in batches
            got += sm.batched_get(keys[s : s + 16], location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
        assert backend.readahead_served == 40
        sm.batched_unpin(keys, [NAME])
    finally:
        sm.close()


def test_read_ahead_stays_within_its_limit_and_follows_the_retrieval(tmp_path):
    sm = manager(write_toml(tmp_path, shm=False), local_cpu_gb=0.05, readahead_mib=1)
    try:
        backend = sm.storage_backends[NAME]
        keys, expected = stored(sm, 40)
        free = free_chunks(sm)
        assert sm.batched_contains(keys, search_range=[NAME], pin=True)[0] == 40
        assert free_chunks(sm) == free - 8  # 1 MiB of 128 KiB chunks
        got = []
        for s in range(0, 40, 8):
            got += sm.batched_get(keys[s : s + 8], location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
        assert backend.readahead_served == 40  # each retrieval started the next window
        sm.batched_unpin(keys, [NAME])
    finally:
        sm.close()


def test_chunks_read_ahead_but_not_retrieved_go_back_to_lmcache_pool(tmp_path):
    sm = manager(write_toml(tmp_path, shm=False), local_cpu_gb=0.05)
    try:
        backend = sm.storage_backends[NAME]
        keys, expected = stored(sm, 24)
        free = free_chunks(sm)
        assert sm.batched_contains(keys, search_range=[NAME], pin=True)[0] == 24
        assert free_chunks(sm) == free - 24
        # Held here so that only the plugin's release, not garbage collection, frees them.
        ahead = read_ahead_chunks(backend)
        assert len(ahead) == 24
        # The request is dropped: LMCache unpins without retrieving.
        sm.batched_unpin(keys, [NAME])
        wait_released(backend, ahead)
        assert free_chunks(sm) == free
        # A retrieval that asks for chunks other than the ones looked up reads them itself.
        assert sm.batched_contains(keys[:8], search_range=[NAME], pin=True)[0] == 8
        got = sm.batched_get(keys[8:16], location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected[8:16]
        assert backend.readahead_served == 0
        sm.batched_unpin(keys[:8], [NAME])
        for obj in got:
            obj.ref_count_down()
    finally:
        sm.close()


def test_a_chunk_corrupt_on_disk_is_a_miss_when_read_ahead(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    sm = manager(toml, local_cpu_gb=0.05)
    try:
        keys, expected = stored(sm, 6)
    finally:
        sm.close()
    assert corrupt_block(tmp_path / "files", expected[3]) == 1
    sm = manager(toml, local_cpu_gb=0.05)
    try:
        free = free_chunks(sm)
        backend = sm.storage_backends[NAME]
        assert sm.batched_contains(keys, search_range=[NAME], pin=True)[0] == 6
        ahead = read_ahead_chunks(backend)
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got[:3]] == expected[:3]
        assert got[3:] == [None, None, None]  # the prefix ends at the corrupt chunk
        assert backend.readahead_served == 3
        sm.batched_unpin(keys, [NAME])
        for obj in got[:3]:
            obj.ref_count_down()
        # LMCache's CPU backend kept nothing (a batch with a miss is not written back),
        # and the chunks read ahead from the corrupt one on went back to the pool.
        wait_released(backend, ahead)
        assert free_chunks(sm) == free
        assert sm.batched_contains(keys, search_range=[NAME])[0] == 3  # dropped
    finally:
        sm.close()


def test_read_ahead_can_be_turned_off_and_a_bad_setting_is_a_config_error(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    sm = manager(toml, readahead_mib=0)
    try:
        keys, expected = stored(sm, 8)
        assert sm.batched_contains(keys, search_range=[NAME], pin=True)[0] == 8
        got = sm.batched_get(keys, location=NAME)
        assert [bytes(o.byte_array) for o in got] == expected
        assert sm.storage_backends[NAME].readahead_served == 0
    finally:
        sm.close()
    for bad in (-1, "lots", True):
        config = SimpleNamespace(
            storage_plugins=[NAME],
            extra_config={
                f"storage_plugin.{NAME}.module_path": "cascade.integrations.lmcache",
                f"storage_plugin.{NAME}.class_name": "CascadeBackend",
                f"storage_plugin.{NAME}.config": str(toml),
                f"storage_plugin.{NAME}.readahead_mib": bad,
            },
        )
        with pytest.raises(cascade.ConfigError, match="readahead_mib"):
            CascadeBackend(dst_device="cpu", config=config, metadata=None, local_cpu_backend=None)
