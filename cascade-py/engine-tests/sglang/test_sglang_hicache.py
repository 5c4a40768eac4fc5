"""The Cascade HiCache backend driven as SGLang drives it: created by SGLang's
StorageBackendFactory ("dynamic" backend), registered with a real host KV pool
(MHATokenToKVPoolHost over a CPU MHATokenToKVPool), and called through the
HiCacheController's own page functions (_page_set_zero_copy, _page_get_zero_copy,
_generic_page_set, _generic_page_get) and the hit query (batch_exists)."""

import types

import pytest
import torch
from helpers import corrupt_block, write_toml
from sglang.srt.managers.cache_controller import HiCacheController
from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool
from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost
from sglang.srt.mem_cache.storage import StorageBackendFactory

from cascade.integrations.sglang import CascadeHiCacheStorage

PAGE = 16
LAYERS = 3


def host_pool(layout="page_first", dtype=torch.bfloat16, head_num=2):
    device = MHATokenToKVPool(
        size=512, page_size=PAGE, dtype=dtype, head_num=head_num, head_dim=64,
        layer_num=LAYERS, device="cpu", enable_memory_saver=False, enable_alt_stream=False,
    )
    return MHATokenToKVPoolHost(
        device._mha_buffer_info(), 2.0, 0, PAGE, layout, pin_memory=False, device="cpu",
        device_capacity_tokens=512, start_layer=0, end_layer=LAYERS,
    )


def storage_config(toml, model="Qwen/Qwen3-8B", tp_rank=0, tp_size=1, zero_copy=True,
                   namespace=None, mla=False):
    extra = {
        "backend_name": "cascade",
        "module_path": "cascade.integrations.sglang",
        "class_name": "CascadeHiCacheStorage",
        "interface_v1": 1 if zero_copy else 0,
        "config": str(toml),
    }
    if namespace is not None:
        extra["namespace"] = namespace
    return HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0,
        attn_cp_size=1, is_mla_model=mla, enable_storage_metrics=False,
        is_page_first_layout=True, model_name=model, extra_config=extra,
    )


def backend(toml, pool, **kw):
    made = StorageBackendFactory.create_backend("dynamic", storage_config(toml, **kw), pool)
    made.register_mem_pool_host(pool)  # as HiCacheController.attach_storage_backend does
    return made


def controller(storage, pool):
    """The HiCacheController state its page functions read."""
    return types.SimpleNamespace(storage_backend=storage, storage_host_pool=pool,
                                 mem_pool_host=pool, page_size=PAGE)


OPERATION = types.SimpleNamespace(request_id="r1", is_terminated=lambda: False)


def pages(first, count):
    return torch.arange(first * PAGE, (first + count) * PAGE, dtype=torch.int64)


def fill(pool, seed=0):
    gen = torch.Generator().manual_seed(seed)
    raw = pool.kv_buffer.view(torch.int16)
    raw.copy_(torch.randint(-(2**15), 2**15, raw.shape, dtype=torch.int16, generator=gen))


def page_bytes(pool, page):
    return bytes(pool.get_data_page(page * PAGE, flat=True).view(torch.uint8).numpy())


def keys(n, tag="k"):
    return [f"{tag}{i:04d}" * 4 for i in range(n)]


def test_sglang_factory_loads_the_backend(tmp_path):
    pool = host_pool()
    made = backend(write_toml(tmp_path), pool)
    try:
        assert isinstance(made, CascadeHiCacheStorage)
        assert made.zero_copy and made._parts == 2  # K and V of each page_first page
    finally:
        made.close()


@pytest.mark.parametrize("layout", ["page_first", "layer_first"])
def test_zero_copy_pages_round_trip(tmp_path, layout):
    pool = host_pool(layout)
    made = backend(write_toml(tmp_path), pool)
    try:
        fill(pool)
        ks = keys(5)
        before = [page_bytes(pool, p) for p in range(2, 7)]
        ctl = controller(made, pool)
        assert HiCacheController._page_set_zero_copy(ctl, ks, pages(2, 5))
        pool.kv_buffer.zero_()
        assert made.batch_exists(ks) == 5
        got = HiCacheController._page_get_zero_copy(ctl, OPERATION, ks, pages(10, 5))
        assert got == 5
        assert [page_bytes(pool, p) for p in range(10, 15)] == before
    finally:
        made.close()


def test_generic_page_interface_round_trips(tmp_path):
    pool = host_pool()
    made = backend(write_toml(tmp_path), pool, zero_copy=False)
    try:
        fill(pool, seed=3)
        ks = keys(4, "g")
        before = [page_bytes(pool, p) for p in range(0, 4)]
        ctl = controller(made, pool)
        assert HiCacheController._generic_page_set(ctl, ks, pages(0, 4))
        pool.kv_buffer.zero_()
        assert HiCacheController._generic_page_get(ctl, OPERATION, ks, pages(20, 4)) == 4
        assert [page_bytes(pool, p) for p in range(20, 24)] == before
        assert made.exists(ks[0]) and not made.exists("absent")
        one = made.get(ks[1], pool.get_dummy_flat_data_page())
        assert bytes(one.view(torch.uint8).numpy()) == before[1]
    finally:
        made.close()


def test_missing_pages_are_misses_and_hits_count_from_the_start(tmp_path):
    pool = host_pool()
    made = backend(write_toml(tmp_path), pool)
    try:
        fill(pool)
        ks = keys(4)
        assert all(made.batch_set_v1([ks[0], ks[1], ks[3]], torch.cat([pages(0, 2), pages(3, 1)])))
        assert made.batch_exists(ks) == 2
        assert made.batch_exists(["nothing"] + ks) == 0
        assert made.batch_get_v1(ks, pages(8, 4)) == [True, True, False, True]
        ctl = controller(made, pool)
        assert HiCacheController._page_get_zero_copy(ctl, OPERATION, ks, pages(8, 4)) == 2
    finally:
        made.close()


def test_a_corrupt_page_is_a_miss(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    pool = host_pool()
    made = backend(toml, pool)
    fill(pool, seed=5)
    ks = keys(3)
    try:
        assert all(made.batch_set_v1(ks, pages(0, 3)))
        k_part_of_page_1 = bytes(
            pool.kv_buffer.view(torch.uint8)[0, PAGE : 2 * PAGE].contiguous().numpy()
        )
    finally:
        made.close()
    assert corrupt_block(tmp_path / "files", k_part_of_page_1) == 1
    pool.kv_buffer.zero_()
    made = backend(toml, pool)
    try:
        assert made.batch_get_v1(ks, pages(4, 3)) == [True, False, True]
        # The corrupt copy was dropped, so the next hit query stops before it.
        assert made.batch_exists(ks) == 1
    finally:
        made.close()


def test_models_tenants_and_tp_ranks_never_share_pages(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    pool = host_pool()
    k = keys(1)
    variants = [
        dict(model="Qwen/Qwen3-8B"),
        dict(model="meta-llama/Llama-3.1-8B"),
        dict(model="Qwen/Qwen3-8B", namespace="tenant-b"),
        dict(model="Qwen/Qwen3-8B", tp_rank=1, tp_size=2),
    ]
    stored = []
    for i, kw in enumerate(variants):
        made = backend(toml, pool, **kw)
        try:
            assert made.batch_exists(k) == 0, kw
            fill(pool, seed=10 + i)
            assert made.batch_set_v1(k, pages(0, 1)) == [True]
            stored.append(page_bytes(pool, 0))
        finally:
            made.close()
    for kw, expected in zip(variants, stored):
        made = backend(toml, pool, **kw)
        try:
            pool.kv_buffer.zero_()
            assert made.batch_get_v1(k, pages(1, 1)) == [True]
            assert page_bytes(pool, 1) == expected, kw
        finally:
            made.close()
    # A pool of another dtype is another layout: nothing of the bf16 pages matches.
    made = backend(toml, host_pool(dtype=torch.float16))
    try:
        assert made.batch_exists(k) == 0
    finally:
        made.close()


def test_clear_removes_only_what_this_backend_stored(tmp_path):
    toml = write_toml(tmp_path, shm=False)
    pool = host_pool()
    a = backend(toml, pool, namespace="a")
    fill(pool)
    try:
        assert all(a.batch_set_v1(keys(2), pages(0, 2)))
    finally:
        a.close()
    b = backend(toml, pool, namespace="b")
    try:
        assert all(b.batch_set_v1(keys(2), pages(0, 2)))
        assert b.clear() and b.batch_exists(keys(2)) == 0
    finally:
        b.close()
    a = backend(toml, pool, namespace="a")
    try:
        assert a.batch_exists(keys(2)) == 2
    finally:
        a.close()
