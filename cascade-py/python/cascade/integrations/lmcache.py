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
      storage_plugin.cascade.readahead_mib: 64                   # 0: no read-ahead

LMCache keeps its LocalCPUBackend as the allocator of every chunk it hands around: a put
gives this plugin chunks that live in that pool and a get fills chunks allocated there,
so Cascade copies straight between LMCache's pool and its own tiers.

A lookup that pins chunks (vLLM's scheduler looks every request up with ``pin=True``
before its worker retrieves the chunks) starts reading them into LMCache's pool in the
background, up to ``readahead_mib`` MiB ahead of the retrieval, so the tier's reads
overlap LMCache's handling of the batches before them (see :class:`_ReadAhead`).

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
import weakref
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

from .common import (
    KeySpace,
    close_store,
    finish_loads,
    load_blocks,
    logger,
    open_store,
    start_loads,
)

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

#: Default of ``readahead_mib``: how far (MiB of chunks) read-ahead runs before the
#: retrieval that consumes it. The lookup that starts it is on the scheduler's path:
#: 64 MiB kept the cold read's gain of 256 MiB while a lookup of 2000 chunks of 128 KiB
#: took 7 to 16 ms instead of 19 to 47 (docs/benchmarks.md, "Read-ahead on LMCache's
#: pinned lookup").
READAHEAD_MIB = 64

# Chunks whose block ids are remembered (about 250 bytes each); the cache starts over
# when full.
_ID_CACHE_ENTRIES = 1 << 16

# One background read takes at most this many chunks or bytes, so the first chunks of a
# long lookup are ready before the whole window is read.
_STEP_CHUNKS = 64
_STEP_BYTES = 16 << 20


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
        readahead_mib = _readahead_mib(settings.get("readahead_mib", READAHEAD_MIB))
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
        self._id_cache: dict[CacheEngineKey, tuple[str, str]] = {}
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
        self._readahead: Optional[_ReadAhead] = (
            _ReadAhead(self, readahead_mib << 20) if readahead_mib > 0 else None
        )

    def __str__(self) -> str:
        return self.name

    # -- ids -----------------------------------------------------------------------------

    def _ids(self, key: CacheEngineKey) -> tuple[str, str]:
        # Each chunk's ids are needed at its put, its lookup and its read; two keyed
        # BLAKE2b of its key string cost several times a dict lookup.
        ids = self._id_cache.get(key)
        if ids is None:
            text = key.to_string().encode()
            ids = (self.keys.block_id(text), self.keys.block_id(text + _META_SUFFIX))
            if len(self._id_cache) >= _ID_CACHE_ENTRIES:
                self._id_cache.clear()
            self._id_cache[key] = ids
        return ids

    # -- lookups -------------------------------------------------------------------------

    def contains(self, key: CacheEngineKey, pin: bool = False) -> bool:
        data_id, _ = self._ids(key)
        found = self.store.contains(data_id)
        if found and pin:
            self._pinned.add(key)
            self._read_ahead([key])
        return found

    def batched_contains(self, keys: List[CacheEngineKey], pin: bool = False) -> int:
        ids = [self._ids(k)[0] for k in keys]
        hits = self.store.lookup_prefix(ids) if ids else 0
        if pin and hits:
            self._pinned.update(keys[:hits])
            self._read_ahead(keys[:hits])
        return hits

    def _read_ahead(self, keys: Sequence[CacheEngineKey]) -> None:
        if self._readahead is not None:
            self._readahead.queue(keys)

    @property
    def readahead_served(self) -> int:
        """Chunks a retrieval took from read-ahead (read before LMCache asked)."""
        return self._readahead.served if self._readahead is not None else 0

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

    def _resolve(
        self, keys: Sequence[CacheEngineKey]
    ) -> tuple[list[str], list[_Record]]:
        """Ids and records of the leading chunks of ``keys`` whose record is known."""
        ids: list[str] = []
        records: list[_Record] = []
        for key in keys:
            data_id, meta_id = self._ids(key)
            record = self._record_of(data_id, meta_id)
            if record is None:
                break
            ids.append(data_id)
            records.append(record)
        return ids, records

    def _chunks_for(
        self, ids: list[str], records: list[_Record], wait_for_room: bool
    ) -> tuple[list[str], list[MemoryObj]]:
        """Chunks from LMCache's pool for the leading ``records`` of the right size,
        and their ids. ``wait_for_room=False`` neither evicts LMCache's chunks nor
        waits for space (read-ahead's allocation)."""
        objs = _allocate(self.get_allocator_backend(), records, wait_for_room)
        if len(objs) < len(records):
            if wait_for_room:
                logger.warning(
                    "LMCache could not allocate %d chunks", len(records) - len(objs)
                )
            ids = ids[: len(objs)]
        for i, (obj, record) in enumerate(zip(objs, records)):
            if obj.get_size() != record.size:
                for extra in objs[i:]:
                    extra.ref_count_down()
                return ids[:i], objs[:i]
        return ids, objs

    def _load_prefix(self, keys: Sequence[CacheEngineKey]) -> list[MemoryObj]:
        """Loads the leading chunks of ``keys`` that Cascade holds whole."""
        if self._readahead is None:
            return self._load_now(keys)
        taken = self._readahead.take(keys)
        loaded: list[MemoryObj] = []
        for n, (obj, step, i) in enumerate(taken):
            if step.hits(self.store)[i]:
                loaded.append(obj)
                continue
            with self._records_lock:
                self._records.pop(step.ids[i], None)
            for later, later_step, _ in taken[n:]:
                self._readahead.release_when_read(later, later_step)
            break
        self._readahead.served += len(loaded)
        if len(loaded) == len(taken):
            if len(loaded) < len(keys):
                # Before the next window starts: this retrieval's own chunks come first
                # in LMCache's pool, so read-ahead never keeps it waiting for room.
                loaded += self._load_now(keys[len(loaded) :])
        # Keep the next pinned chunks coming while LMCache handles these.
        self._readahead.start()
        return loaded

    def _load_now(self, keys: Sequence[CacheEngineKey]) -> list[MemoryObj]:
        """Reads the leading chunks of ``keys`` that Cascade holds whole, in the call."""
        ids, records = self._resolve(keys)
        if not records:
            return []
        ids, objs = self._chunks_for(ids, records, wait_for_room=True)
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
        if self._readahead is not None:
            self._readahead.drop(key)
        return self.contains(key)

    def remove(self, key: CacheEngineKey, force: bool = True) -> bool:
        if not force and key in self._pinned:
            return False
        data_id, meta_id = self._ids(key)
        if self._readahead is not None:
            self._readahead.drop(key)
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
        if self._readahead is not None:
            self._readahead.close()
        close_store(self.store)


class _Step:
    """One background read of read-ahead chunks; its outcome is learnt once."""

    __slots__ = ("_buffers", "_handle", "_hits", "_lock", "ids", "objs")

    def __init__(
        self, handle: Any, ids: list[str], objs: list[MemoryObj], buffers: list[Any]
    ) -> None:
        self._handle = handle
        self._hits: Optional[list[bool]] = None
        self._lock = threading.Lock()
        self._buffers = buffers
        self.ids = ids
        self.objs = objs

    def done(self) -> bool:
        """Whether the read no longer writes into the chunks."""
        # Read once: hits() clears the handle (after setting the hits) without the
        # caller's lock, and a cleared handle means the read is over.
        handle = self._handle
        return handle is None or handle.done()

    def hits(self, store: cascade.CascadeStore) -> list[bool]:
        """Per chunk, whether it was read whole (waits for the read)."""
        with self._lock:
            if self._hits is None:
                sizes = [o.get_size() for o in self.objs]
                self._hits = finish_loads(self._handle, store, self.ids, self._buffers, sizes)
                self._handle = None
                self._buffers = []
            return self._hits


class _ReadAhead:
    """Pinned chunks read into LMCache's CPU pool before LMCache asks for them.

    LMCache's lookup pins the chunks it found, then retrieves them in batches (64 chunks
    at a time in its StorageManager) and unpins them. It waits for each batch before
    handling it and asking for the next, so a cold read from the file tier leaves the
    disk idle while LMCache copies the previous batch out; reading the pinned chunks
    ahead keeps it busy. At most ``limit`` bytes of chunks are read ahead and not yet
    taken; allocation never evicts LMCache's chunks or waits for room (a full pool just
    means those chunks are read when asked for), and a retrieval allocates its own chunks
    before the next window starts. A chunk that is unpinned, removed or
    skipped by its retrieval goes back to LMCache's pool once its read is over, never
    while Cascade may still write into it.
    """

    def __init__(self, backend: CascadeBackend, limit: int) -> None:
        # A proxy, not a reference: the backend owns this and is collected as before.
        self._backend = weakref.proxy(backend)
        self._limit = limit
        # One lock for the queue, the chunks ahead and their byte count, which must
        # stay in step; starting reads happens under it too, so an unpin never misses a
        # chunk that is being started.
        self._lock = threading.Lock()
        self._queued: dict[CacheEngineKey, None] = {}  # in lookup order
        self._ahead: dict[CacheEngineKey, tuple[_Step, int]] = {}
        self._bytes = 0
        self._released_later: list[tuple[MemoryObj, _Step]] = []
        #: Chunks retrievals took from read-ahead.
        self.served = 0

    def queue(self, keys: Sequence[CacheEngineKey]) -> None:
        """Adds pinned chunks to read ahead, in order, and starts reading."""
        with self._lock:
            for key in keys:
                if key not in self._ahead:
                    self._queued[key] = None
        self.start()

    def start(self) -> None:
        """Starts reads of queued chunks while less than the limit is read ahead."""
        with self._lock:
            self._release_read()
            while self._queued and self._bytes < self._limit:
                if not self._start_step():
                    return

    def _start_step(self) -> bool:
        keys: list[CacheEngineKey] = []
        while self._queued and len(keys) < _STEP_CHUNKS:
            key = next(iter(self._queued))
            del self._queued[key]
            keys.append(key)
        backend = self._backend
        ids, records = backend._resolve(keys)
        # Within the limit, but a chunk larger than the whole limit still goes alone.
        room = min(_STEP_BYTES, self._limit - self._bytes)
        step_bytes, n = 0, 0
        for record in records:
            if step_bytes + record.size > room and (n or self._bytes):
                break
            step_bytes += record.size
            n += 1
        # Chunks past this step go back to the head of the queue; chunks without a
        # record are misses, read (and found missing) when asked for.
        rest = keys[n:len(records)]
        if rest:
            self._queued = {**dict.fromkeys(rest), **self._queued}
        if not records:
            return bool(self._queued)
        if n == 0:
            return False  # the window is full
        try:
            ids, objs = backend._chunks_for(ids[:n], records[:n], wait_for_room=False)
        except Exception as e:  # LMCache's allocator failing is not the engine's error
            logger.warning("Cascade read-ahead could not allocate chunks: %s", e)
            return False
        if not objs:
            return False  # LMCache's pool is full: read when asked for
        buffers = [o.byte_array for o in objs]
        try:
            handle = start_loads(backend.store, ids, buffers)
        except cascade.CascadeError as e:
            logger.warning("Cascade read-ahead could not start: %s", e)
            for obj in objs:
                obj.ref_count_down()
            return False
        step = _Step(handle, ids, objs, buffers)
        for i, (key, obj) in enumerate(zip(keys, objs)):
            self._ahead[key] = (step, i)
            self._bytes += obj.get_size()
        return len(objs) == n

    def take(
        self, keys: Sequence[CacheEngineKey]
    ) -> list[tuple[MemoryObj, _Step, int]]:
        """The leading chunks of ``keys`` read ahead, now the caller's: each to be
        used only after ``step.hits()``. The retrieval reads the others itself, so their
        read-ahead stops."""
        taken: list[tuple[MemoryObj, _Step, int]] = []
        with self._lock:
            for key in keys:
                entry = self._ahead.pop(key, None)
                if entry is None:
                    break
                step, i = entry
                obj = step.objs[i]
                self._bytes -= obj.get_size()
                taken.append((obj, step, i))
            for key in keys[len(taken) :]:
                self._drop(key)
        return taken

    def drop(self, key: CacheEngineKey) -> None:
        """Stops reading ``key`` ahead (unpinned or removed)."""
        with self._lock:
            self._drop(key)
            self._release_read()

    def release_when_read(self, obj: MemoryObj, step: _Step) -> None:
        """Gives a taken chunk back to LMCache's pool once its read is over."""
        with self._lock:
            self._released_later.append((obj, step))
            self._release_read()

    def _drop(self, key: CacheEngineKey) -> None:
        self._queued.pop(key, None)
        entry = self._ahead.pop(key, None)
        if entry is not None:
            step, i = entry
            obj = step.objs[i]
            self._bytes -= obj.get_size()
            self._released_later.append((obj, step))

    def _release_read(self) -> None:
        still: list[tuple[MemoryObj, _Step]] = []
        for obj, step in self._released_later:
            if step.done():
                obj.ref_count_down()
            else:
                still.append((obj, step))
        self._released_later = still

    def close(self) -> None:
        """Waits for every read and gives all chunks back."""
        with self._lock:
            self._queued.clear()
            for key in list(self._ahead):
                self._drop(key)
            pending = self._released_later
            self._released_later = []
        for obj, step in pending:
            step.hits(self._backend.store)
            obj.ref_count_down()


def _readahead_mib(value: Any) -> int:
    try:
        mib = int(value)
    except (TypeError, ValueError):
        mib = -1
    if mib < 0 or isinstance(value, bool):
        raise cascade.ConfigError(
            f"storage_plugin readahead_mib must be a whole number of MiB >= 0 (0: off), "
            f"not {value!r}"
        )
    return mib


def _allocate(
    allocator: Any, records: list[_Record], wait_for_room: bool = True
) -> list[MemoryObj]:
    """Chunks for ``records`` from LMCache's CPU pool, in one batch when they are alike
    (the common case: full chunks of one model); fewer when the pool runs out.
    ``wait_for_room=False`` neither evicts nor waits (LocalCPUBackend's ``eviction`` and
    ``busy_loop``)."""
    room = {} if wait_for_room else {"eviction": False, "busy_loop": False}
    first = records[0]
    if all(
        r.shape == first.shape and r.dtype == first.dtype and r.fmt == first.fmt
        for r in records
    ):
        objs = allocator.batched_allocate(
            first.shape, first.dtype, len(records), first.fmt, **room
        )
        if objs is not None:
            return list(objs)
        if not wait_for_room:
            return []
    objs = []
    for r in records:
        obj = allocator.allocate(r.shape, r.dtype, r.fmt, **room)
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
