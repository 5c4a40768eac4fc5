"""Cascade as an SGLang HiCache storage backend (the L3 under SGLang's host KV pool).

SGLang loads it with::

    python -m sglang.launch_server --model-path ... --enable-hierarchical-cache \\
        --hicache-mem-layout page_first --hicache-storage-backend dynamic \\
        --hicache-storage-backend-extra-config '{"backend_name": "cascade",
            "module_path": "cascade.integrations.sglang",
            "class_name": "CascadeHiCacheStorage",
            "interface_v1": 1, "config": "/etc/cascade/sglang.toml"}'

With ``interface_v1`` SGLang calls the zero-copy ``batch_get_v1`` / ``batch_set_v1``:
Cascade copies straight between the pages of SGLang's host pool and its tiers, one
Cascade block per buffer of a page (K and V for MHA in ``page_first``, one per layer and
K/V in ``layer_first``, one for MLA). Without it SGLang uses ``batch_get`` / ``batch_set``
of flat page tensors, one block per page.

Ids come from SGLang's page hashes (each already chains the token prefix) inside a
namespace of the model, the host pool's dtype and layout, page size, the tensor-parallel
shard (MHA; MLA pages are the same on every rank and only one rank writes them), the
pipeline and context-parallel shard, and the optional ``namespace`` salt.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, List, Optional

import torch
from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
)

import cascade

from .common import (
    KeySpace,
    close_store,
    leading_hits,
    load_blocks,
    logger,
    open_store,
    save_blocks,
)

_ARRAY_TYPES: dict[int, type] = {}


def _host_view(ptr: int, size: int) -> memoryview:
    """A writable view of ``size`` bytes of host memory at ``ptr`` (a page of SGLang's
    host pool, which outlives every call that uses the view)."""
    array_type = _ARRAY_TYPES.get(size)
    if array_type is None:
        # ctypes builds a new type per (c_ubyte * n): keep one per size.
        array_type = _ARRAY_TYPES.setdefault(size, ctypes.c_ubyte * size)
    return memoryview(array_type.from_address(ptr)).cast("B")


def _global_rank(c: HiCacheStorageConfig) -> int:
    rank = c.dp_rank
    rank = rank * c.pp_size + c.pp_rank
    rank = rank * c.attn_cp_size + c.attn_cp_rank
    return rank * c.tp_size + c.tp_rank


class CascadeHiCacheStorage(HiCacheStorage):
    """SGLang's ``HiCacheStorage`` over a Cascade store.

    Extra config keys besides SGLang's own: ``config``, the Cascade TOML
    (``$CASCADE_CONFIG`` when absent; ``{rank}`` in it becomes this worker's global
    rank), ``namespace``, a tenant salt.
    """

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None):
        extra = dict(storage_config.extra_config or {})
        self.storage_config = storage_config
        self.zero_copy = bool(int(extra.get("interface_v1", 0) or 0))
        self.salt = extra.get("namespace")
        self.store: cascade.CascadeStore = open_store(
            extra.get("config"), rank=_global_rank(storage_config)
        )
        self.keys: Optional[KeySpace] = None
        self._parts = 1
        self._written: set[str] = set()
        self._written_lock = threading.Lock()

    # -- registration --------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        c = self.storage_config
        mla = c.is_mla_model
        page_size = int(mem_pool_host.page_size)
        if self.zero_copy:
            if getattr(mem_pool_host, "kv_buffer", None) is None:
                raise ValueError(
                    "the Cascade HiCache backend's zero-copy interface needs a host pool "
                    "with its own KV buffer (hybrid pools are not supported yet)"
                )
            _, sizes = mem_pool_host.get_page_buffer_meta(torch.arange(page_size))
            self._parts = len(sizes)
        layout = (
            f"{type(mem_pool_host).__name__}/{getattr(mem_pool_host, 'layout', '')}"
            f"/page{page_size}/{'v1' if self.zero_copy else 'flat'}"
            f"/pp{c.pp_rank}of{c.pp_size}/cp{c.attn_cp_rank}of{c.attn_cp_size}"
        )
        if c.dcp_size > 1:
            layout += f"/dcp{c.dcp_rank}of{c.dcp_size}"
        self.keys = KeySpace(
            "sglang",
            c.model_name or "",
            str(getattr(mem_pool_host, "dtype", "")),
            layout,
            0 if mla else c.tp_rank,
            1 if mla else c.tp_size,
            self.salt,
        )

    def _space(self) -> KeySpace:
        if self.keys is None:
            raise RuntimeError(
                "the Cascade HiCache backend has no host pool yet (register_mem_pool_host)"
            )
        return self.keys

    def _page_ids(self, keys: List[str]) -> list[str]:
        """Block ids of every buffer of every page, page by page."""
        space = self._space()
        if self._parts == 1 and not self.zero_copy:
            return space.block_ids(keys)
        return space.block_ids(f"{k}#{j}" for k in keys for j in range(self._parts))

    def _remember(self, ids: list[str]) -> None:
        with self._written_lock:
            self._written.update(ids)

    # -- zero-copy interface (interface_v1) ------------------------------------------------

    def _views(self, keys: List[str], host_indices: torch.Tensor) -> list[memoryview]:
        ptrs, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        if len(ptrs) != len(keys) * self._parts:
            raise ValueError(
                f"{len(keys)} pages gave {len(ptrs)} buffers, expected {self._parts} each"
            )
        return [_host_view(p, s) for p, s in zip(ptrs, sizes)]

    def _per_page(self, ok: list[bool]) -> list[bool]:
        n = self._parts
        return [all(ok[i : i + n]) for i in range(0, len(ok), n)]

    def batch_set_v1(
        self,
        keys: List[str],
        host_indices: torch.Tensor,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> List[bool]:
        if not keys:
            return []
        ids = self._page_ids(keys)
        views = self._views(keys, host_indices)
        if save_blocks(self.store, ids, views):
            self._remember(ids)
            return [True] * len(keys)
        stored = [self.store.contains(i) for i in ids]
        self._remember([i for i, s in zip(ids, stored) if s])
        return self._per_page(stored)

    def batch_get_v1(
        self,
        keys: List[str],
        host_indices: torch.Tensor,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> List[bool]:
        if not keys:
            return []
        ids = self._page_ids(keys)
        views = self._views(keys, host_indices)
        return self._per_page(load_blocks(self.store, ids, views))

    # -- page-tensor interface ---------------------------------------------------------------

    def get(
        self,
        key: str,
        target_location: Optional[Any] = None,
        target_sizes: Optional[Any] = None,
    ) -> Optional[torch.Tensor]:
        return self.batch_get([key], [target_location])[0]

    def batch_get(
        self,
        keys: List[str],
        target_locations: Optional[Any] = None,
        target_sizes: Optional[Any] = None,
    ) -> List[Optional[torch.Tensor]]:
        if not keys:
            return []
        if self.zero_copy:
            raise NotImplementedError("with interface_v1 SGLang reads through batch_get_v1")
        ids = self._page_ids(keys)
        outs = list(target_locations) if target_locations is not None else [None] * len(keys)
        for i, (block_id, out) in enumerate(zip(ids, outs)):
            if out is None:
                size = self.store.size_of(block_id)
                outs[i] = torch.empty(size or 0, dtype=torch.uint8)
        views = [o.view(-1).view(torch.uint8) if o.is_contiguous() else None for o in outs]
        readable = [i for i, v in enumerate(views) if v is not None]
        hits = load_blocks(self.store, [ids[i] for i in readable], [views[i] for i in readable])
        result: list[Optional[torch.Tensor]] = [None] * len(keys)
        for i, hit in zip(readable, hits):
            if hit:
                result[i] = outs[i]
        return result

    def set(
        self,
        key: str,
        value: Optional[Any] = None,
        target_location: Optional[Any] = None,
        target_sizes: Optional[Any] = None,
    ) -> bool:
        return self.batch_set([key], [value])

    def batch_set(
        self,
        keys: List[str],
        values: Optional[Any] = None,
        target_locations: Optional[Any] = None,
        target_sizes: Optional[Any] = None,
    ) -> bool:
        if not keys:
            return True
        if self.zero_copy:
            raise NotImplementedError("with interface_v1 SGLang writes through batch_set_v1")
        if values is None or len(values) != len(keys):
            return False
        ids = self._page_ids(keys)
        blocks = [v.contiguous().view(-1).view(torch.uint8) for v in values]
        ok = save_blocks(self.store, ids, blocks)
        self._remember([i for i in ids if ok or self.store.contains(i)])
        return ok

    # -- lookups -------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    def batch_exists(
        self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None
    ) -> int:
        if not keys:
            return 0
        return leading_hits(self.store, self._page_ids(keys)) // self._parts

    # -- housekeeping --------------------------------------------------------------------

    def clear(self) -> bool:
        """Removes the blocks this backend stored since it opened (other tenants and
        models sharing the deployment keep theirs)."""
        with self._written_lock:
            ids, self._written = list(self._written), set()
        for block_id in ids:
            try:
                self.store.remove(block_id)
            except cascade.CascadeError as e:
                logger.warning("Cascade could not remove %s: %s", block_id, e)
                return False
        return True

    def close(self) -> None:
        if not self.store.closed:
            close_store(self.store)
