"""The Cascade plugin driven through LMCache's own StorageManager on CPU: LMCache loads
it from its config (storage_plugins + module_path/class_name), allocates chunks in its
LocalCPUBackend, and stores and retrieves them through the plugin."""

import time

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


def manager(toml, model="llama", namespace=None, async_put=False, local_cpu_gb=0.25):
    extra = {
        f"storage_plugin.{NAME}.module_path": "cascade.integrations.lmcache",
        f"storage_plugin.{NAME}.class_name": "CascadeBackend",
        f"storage_plugin.{NAME}.config": str(toml),
        f"storage_plugin.{NAME}.async_put": async_put,
    }
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
