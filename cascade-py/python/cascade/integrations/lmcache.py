"""Cascade as an LMCache storage plugin (LMCache 0.5.x ``StoragePluginInterface``).

LMCache's YAML turns it on::

    chunk_size: 256
    local_cpu: true
    max_local_cpu_size: 5
    storage_plugins: ["cascade"]
    extra_config:
      storage_plugin.cascade.module_path: cascade.integrations.lmcache
      storage_plugin.cascade.class_name: CascadeBackend
      storage_plugin.cascade.config: /etc/cascade/lmcache.toml   # a Cascade TOML
      storage_plugin.cascade.namespace: tenant-a                 # optional salt

LMCache keeps its LocalCPUBackend as the allocator of every chunk it hands around: a put
gives this plugin chunks that live in that pool and a get fills chunks allocated there,
so Cascade copies straight between LMCache's pool and its own tiers.

Each chunk is two Cascade blocks: its bytes, and a small record of its shape, dtype and
memory format, so a restarted LMCache (or another process on the same file tier) can
allocate the chunk before reading it. Ids come from the chunk's ``CacheEngineKey`` string
(model, world size, worker, chunk hash, dtype, tags) inside a namespace of the model,
dtype, worker and the optional ``namespace`` salt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, List, Optional

import torch
from lmcache.utils import CacheEngineKey
from lmcache.v1.memory_management import MemoryFormat, MemoryObj
from lmcache.v1.storage_backend.abstract_backend import (
    AllocatorBackendInterface,
    StoragePluginInterface,
)

import cascade

from .common import KeySpace, close_store, load_blocks, logger, open_store

#: Version of the chunk record's encoding; a record of another version is a miss.
RECORD_VERSION = 1

_META_SUFFIX = b"\x00cascade-meta"


class _Record:
    """Shape, dtype, memory format and size of one stored chunk."""

    __slots__ = ("dtype", "fmt", "shape", "size")

    def __init__(self, shape: torch.Size, dtype: torch.dtype, fmt: MemoryFormat, size: int):
        self.shape = shape
        self.dtype = dtype
        self.fmt = fmt
        self.size = size

    def encoded(self) -> bytes:
        """The record's bytes (records of one model repeat: encoded once each)."""
        return _encode(tuple(self.shape), str(self.dtype), self.fmt.name, self.size)

    @staticmethod
    def _encode(shape: tuple, dtype: str, fmt: str, size: int) -> bytes:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "shape": list(shape),
                "dtype": dtype.removeprefix("torch."),
                "fmt": fmt,
                "size": size,
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Optional[_Record]:
        """The record, or None when ``raw`` is not one this version wrote."""
        try:
            d = json.loads(raw)
            if d.get("v") != RECORD_VERSION:
                return None
            dtype = getattr(torch, d["dtype"])
            if not isinstance(dtype, torch.dtype):
                return None
            return cls(torch.Size(d["shape"]), dtype, MemoryFormat[d["fmt"]], int(d["size"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


_encode = functools.lru_cache(maxsize=256)(_Record._encode)

#: Largest encoded record (a shape of many dimensions still fits).
_RECORD_MAX = 1024


class CascadeBackend(StoragePluginInterface):
    """An LMCache storage backend whose chunks live in a Cascade store.

    Settings (LMCache ``extra_config``, under ``storage_plugin.<name>.``): ``config``, the
    Cascade TOML (``$CASCADE_CONFIG`` when absent; ``{rank}`` in it becomes the worker
    id); ``namespace``, a tenant salt; ``async_put`` (default true), whether stores run
    on a background thread (LMCache's contract) or inside the call.
    """

    def __init__(
        self,
        dst_device: str = "cpu",
        config: Any = None,
        metadata: Any = None,
        local_cpu_backend: Any = None,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        super().__init__(
            dst_device=dst_device,
            config=config,
            metadata=metadata,
            local_cpu_backend=local_cpu_backend,
            loop=loop,
        )
        settings = _plugin_settings(config, type(self))
        worker = int(getattr(metadata, "worker_id", 0) or 0)
        world = int(getattr(metadata, "world_size", 1) or 1)
        self.name: str = settings.get("_name", "cascade")
        self.store: cascade.CascadeStore = open_store(settings.get("config"), rank=worker)
        self.keys = KeySpace(
            "lmcache",
            str(getattr(metadata, "model_name", "") or ""),
            str(getattr(metadata, "kv_dtype", "") or ""),
            "chunk",
            worker,
            world,
            settings.get("namespace"),
        )
        self._records: dict[str, _Record] = {}
        self._records_lock = threading.Lock()
        self._put_tasks: set[CacheEngineKey] = set()
        self._put_lock = threading.Lock()
        self._pinned: set[CacheEngineKey] = set()
        async_put = settings.get("async_put", True)
        self._async_put = async_put not in (False, "false", "False", "0", 0)
        self._writer = (
            ThreadPoolExecutor(1, thread_name_prefix="cascade-lmcache-put")
            if self._async_put
            else None
        )

    def __str__(self) -> str:
        return self.name

    # -- ids -----------------------------------------------------------------------------

    def _ids(self, key: CacheEngineKey) -> tuple[str, str]:
        text = key.to_string().encode()
        return self.keys.block_id(text), self.keys.block_id(text + _META_SUFFIX)

    # -- lookups -------------------------------------------------------------------------

    def contains(self, key: CacheEngineKey, pin: bool = False) -> bool:
        data_id, _ = self._ids(key)
        found = self.store.contains(data_id)
        if found and pin:
            self._pinned.add(key)
        return found

    def batched_contains(self, keys: List[CacheEngineKey], pin: bool = False) -> int:
        ids = [self._ids(k)[0] for k in keys]
        hits = self.store.lookup_prefix(ids) if ids else 0
        if pin:
            self._pinned.update(keys[:hits])
        return hits

    async def batched_async_contains(
        self, lookup_id: str, keys: List[CacheEngineKey], pin: bool = False
    ) -> int:
        return self.batched_contains(keys, pin)

    def exists_in_put_tasks(self, key: CacheEngineKey) -> bool:
        with self._put_lock:
            return key in self._put_tasks

    # -- stores --------------------------------------------------------------------------

    def batched_submit_put_task(
        self,
        keys: Sequence[CacheEngineKey],
        objs: List[MemoryObj],
        transfer_spec: Any = None,
        on_complete_callback: Optional[Callable[[CacheEngineKey], None]] = None,
    ) -> Optional[List[Future]]:
        pending: list[tuple[CacheEngineKey, MemoryObj]] = []
        with self._put_lock:
            for key, obj in zip(keys, objs):
                if key in self._put_tasks:
                    continue
                self._put_tasks.add(key)
                obj.ref_count_up()
                pending.append((key, obj))
        if not pending:
            return None
        if self._writer is None:
            self._put(pending, on_complete_callback)
            return None
        try:
            return [self._writer.submit(self._put, pending, on_complete_callback)]
        except RuntimeError:  # the executor is shut down: LMCache is closing
            self._release(pending)
            return None

    async def async_batched_submit_put_task(
        self,
        keys: Sequence[CacheEngineKey],
        objs: List[MemoryObj],
        transfer_spec: Any = None,
        on_complete_callback: Optional[Callable[[CacheEngineKey], None]] = None,
    ) -> None:
        futures = self.batched_submit_put_task(keys, objs, transfer_spec, on_complete_callback)
        for f in futures or []:
            await asyncio.wrap_future(f)

    def _put(
        self,
        pending: list[tuple[CacheEngineKey, MemoryObj]],
        on_complete_callback: Optional[Callable[[CacheEngineKey], None]],
    ) -> None:
        try:
            ids: list[str] = []
            blocks: list[Any] = []
            records: list[tuple[str, _Record]] = []
            stored: list[CacheEngineKey] = []
            for key, obj in pending:
                dtype = obj.get_dtype()
                if dtype is None:
                    logger.warning("LMCache chunk %s has no dtype; not stored in Cascade", key)
                    continue
                data_id, meta_id = self._ids(key)
                record = _Record(obj.get_shape(), dtype, obj.get_memory_format(), obj.get_size())
                ids += [data_id, meta_id]
                blocks += [obj.byte_array, record.encoded()]
                records.append((data_id, record))
                stored.append(key)
            try:
                self.store.put_batch(ids, blocks)
            except cascade.CascadeError as e:
                # Some blocks of the batch may be stored: only chunks whose bytes and
                # record are both present count, and reads check both.
                logger.warning("Cascade could not store %d LMCache chunks: %s", len(stored), e)
                stored = [k for k in stored if all(map(self.store.contains, self._ids(k)))]
            with self._records_lock:
                for data_id, record in records:
                    self._records[data_id] = record
            if on_complete_callback is not None:
                for key in stored:
                    try:
                        on_complete_callback(key)
                    except Exception as e:  # LMCache's contract: log callback failures
                        logger.warning("on_complete_callback failed for %s: %s", key, e)
        finally:
            self._release(pending)

    def _release(self, pending: list[tuple[CacheEngineKey, MemoryObj]]) -> None:
        with self._put_lock:
            for key, obj in pending:
                obj.ref_count_down()
                self._put_tasks.discard(key)

    # -- reads ---------------------------------------------------------------------------

    def _record_of(self, data_id: str, meta_id: str) -> Optional[_Record]:
        with self._records_lock:
            record = self._records.get(data_id)
        if record is not None:
            return record
        size = self.store.size_of(meta_id)
        if size is None or size > _RECORD_MAX:
            return None
        buf = bytearray(size)
        if not load_blocks(self.store, [meta_id], [buf])[0]:
            return None
        record = _Record.decode(bytes(buf))
        if record is not None:
            with self._records_lock:
                self._records[data_id] = record
        return record

    def _load_prefix(self, keys: Sequence[CacheEngineKey]) -> list[MemoryObj]:
        """Loads the leading chunks of ``keys`` that Cascade holds whole."""
        allocator = self.get_allocator_backend()
        ids: list[str] = []
        records: list[_Record] = []
        for key in keys:
            data_id, meta_id = self._ids(key)
            record = self._record_of(data_id, meta_id)
            if record is None:
                break
            ids.append(data_id)
            records.append(record)
        if not records:
            return []
        objs = _allocate(allocator, records)
        if len(objs) < len(records):
            logger.warning("LMCache could not allocate %d chunks", len(records) - len(objs))
            ids = ids[: len(objs)]
        for i, (obj, record) in enumerate(zip(objs, records)):
            if obj.get_size() != record.size:
                for extra in objs[i:]:
                    extra.ref_count_down()
                objs, ids = objs[:i], ids[:i]
                break
        if not objs:
            return []
        hits = load_blocks(self.store, ids, [o.byte_array for o in objs])
        n = hits.index(False) if False in hits else len(hits)
        for obj, data_id, hit in zip(objs[n:], ids[n:], hits[n:]):
            obj.ref_count_down()
            if not hit:
                with self._records_lock:
                    self._records.pop(data_id, None)
        return objs[:n]

    def get_blocking(self, key: CacheEngineKey) -> Optional[MemoryObj]:
        loaded = self._load_prefix([key])
        return loaded[0] if loaded else None

    def batched_get_blocking(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        loaded: list[Optional[MemoryObj]] = list(self._load_prefix(keys))
        return loaded + [None] * (len(keys) - len(loaded))

    def get_non_blocking(self, key: CacheEngineKey, location: Optional[str] = None) -> Future:
        future: Future = Future()
        future.set_result(self.get_blocking(key))
        return future

    async def batched_get_non_blocking(
        self, lookup_id: str, keys: list[CacheEngineKey], transfer_spec: Any = None
    ) -> list[MemoryObj]:
        return await asyncio.to_thread(self._load_prefix, keys)

    # -- pins and removal ----------------------------------------------------------------

    def pin(self, key: CacheEngineKey) -> bool:
        if not self.contains(key):
            return False
        self._pinned.add(key)
        return True

    def unpin(self, key: CacheEngineKey) -> bool:
        self._pinned.discard(key)
        return self.contains(key)

    def remove(self, key: CacheEngineKey, force: bool = True) -> bool:
        if not force and key in self._pinned:
            return False
        data_id, meta_id = self._ids(key)
        with self._records_lock:
            self._records.pop(data_id, None)
        removed = self.store.remove(data_id)
        self.store.remove(meta_id)
        self._pinned.discard(key)
        return removed

    def touch_cache(self) -> None:
        # Cascade keeps recency itself (every read updates it).
        return None

    def get_allocator_backend(self) -> AllocatorBackendInterface:
        if self.local_cpu_backend is None:
            raise RuntimeError(
                "the Cascade LMCache plugin needs LMCache's LocalCPUBackend "
                "(local_cpu: true, max_local_cpu_size > 0)"
            )
        return self.local_cpu_backend

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        close_store(self.store)


def _allocate(allocator: Any, records: list[_Record]) -> list[MemoryObj]:
    """Chunks for ``records`` from LMCache's CPU pool, in one batch when they are alike
    (the common case: full chunks of one model); fewer when the pool runs out."""
    first = records[0]
    if all(
        r.shape == first.shape and r.dtype == first.dtype and r.fmt == first.fmt
        for r in records
    ):
        objs = allocator.batched_allocate(first.shape, first.dtype, len(records), first.fmt)
        if objs is not None:
            return list(objs)
    objs = []
    for r in records:
        obj = allocator.allocate(r.shape, r.dtype, r.fmt)
        if obj is None:
            break
        objs.append(obj)
    return objs


def _plugin_settings(config: Any, cls: type) -> dict[str, Any]:
    """This plugin's ``storage_plugin.<name>.*`` settings, ``_name`` holding its name.

    The constructor is not told its name: it is the plugin whose module_path and
    class_name name this class.
    """
    extra = dict(getattr(config, "extra_config", None) or {})
    names = list(getattr(config, "storage_plugins", None) or [])
    for name in names:
        prefix = f"storage_plugin.{name}."
        if (
            extra.get(prefix + "module_path") == cls.__module__
            and extra.get(prefix + "class_name") == cls.__name__
        ):
            settings = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
            settings["_name"] = name
            return settings
    return {}
