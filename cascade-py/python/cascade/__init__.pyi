"""Typing stubs of the `cascade` module (the native half is `cascade._native`)."""

import os
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Optional, Union, final

from typing_extensions import Buffer, Self

__all__ = [
    "Backend",
    "GPUBackend",
    "LustreBackend",
    "MemoryBackend",
    "ShmBackend",
    "BusyError",
    "CascadeConfig",
    "CascadeError",
    "CascadeStore",
    "ConfigError",
    "CorruptError",
    "GetBatchHandle",
    "IncompatibleError",
    "InvalidInputError",
    "IoError",
    "NotFoundError",
    "PluginError",
    "PrefetchHandle",
    "TierFullError",
    "TierUnavailableWarning",
    "TooLargeError",
    "UnavailableError",
    "UnsupportedError",
    "__version__",
    "compute_block_id",
    "compute_block_ids",
    "prefix_key",
    "prefix_keys",
    "prefix_namespace",
    "tier_kinds",
]

__version__: str

# Anything exporting a C-contiguous buffer: numpy arrays, bytes, bytearray, memoryview.
_Buffer = Buffer
# A writable C-contiguous buffer: numpy arrays, bytearray, writable memoryviews.
_WritableBuffer = Buffer
# 32 hex characters, as returned by compute_block_id.
_BlockId = str
# A host buffer, or a CUDA tensor (DLPack or __cuda_array_interface__, e.g. a torch CUDA
# tensor): a GPU tier copies it device to device, host tiers by DMA.
_Whole = Union[Buffer, Any]
# A block: whole, or a list (or tuple) of pieces concatenated in order, all host buffers
# or all CUDA tensors (an engine's per-layer K and V).
_Block = Union[_Whole, Sequence[_Whole]]

class CascadeError(Exception):
    """Base class of every error raised by Cascade."""

    kind: str
    """The error kind's stable name: "not_found", "tier_full", ..."""
    context: dict[str, str]
    """Details (ids, sizes, paths, tier names; "index" for a batch item)."""

class NotFoundError(CascadeError): ...
class TierFullError(CascadeError): ...
class TooLargeError(CascadeError, ValueError): ...
class CorruptError(CascadeError): ...
class IoError(CascadeError, OSError): ...
class ConfigError(CascadeError, ValueError): ...
class UnavailableError(CascadeError, RuntimeError): ...
class PluginError(CascadeError): ...
class InvalidInputError(CascadeError, ValueError): ...
class IncompatibleError(CascadeError): ...
class BusyError(CascadeError): ...
class UnsupportedError(CascadeError, NotImplementedError): ...

class TierUnavailableWarning(RuntimeWarning):
    """A configured tier could not be opened on this machine and the store opened
    without it."""

@final
class CascadeConfig:
    """Settings of a store. Tiers, fastest first: GPU when gpu_capacity_bytes > 0,
    shared memory when shm_capacity_bytes > 0, a file tier when lustre_path is set."""

    gpu_capacity_bytes: int
    gpu_device_id: int
    gpu_required: bool
    shm_capacity_bytes: int
    shm_path: str
    lustre_path: str
    lustre_capacity_bytes: int
    dedup_enabled: bool
    promote_on_read: bool
    hasher: str
    num_io_threads: int
    max_prefetches: int
    """Prefetches that move blocks at once (each on its own thread); later ones wait in
    order. At least 1; default 2."""
    write_policy: str
    """"write_back" (default) or "write_through": a put placed in a non-persistent tier
    (GPU) is also written, in the background, to the first persistent tier below;
    flush() waits for those writes."""
    def __new__(
        cls,
        *,
        gpu_capacity_bytes: int = 0,
        gpu_device_id: int = 0,
        gpu_required: bool = False,
        shm_capacity_bytes: int = 1073741824,
        shm_path: str = "",
        lustre_path: str = "",
        lustre_capacity_bytes: int = 0,
        dedup_enabled: bool = True,
        promote_on_read: bool = True,
        hasher: str = "sha256",
        num_io_threads: int = 0,
        write_policy: str = "write_back",
        max_prefetches: int = 2,
    ) -> Self: ...
    def to_toml(self) -> str:
        """The deployment this config opens, as Cascade TOML."""

@final
class PrefetchHandle:
    """A prefetch running in the background (CascadeStore.prefetch). ``len(handle)``
    is the number of blocks asked for; dropping the handle cancels the prefetch unless
    ``detach()`` was called. ``await handle`` waits in the loop's default executor and
    returns ``result()``."""

    def __len__(self) -> int: ...
    @property
    def ready(self) -> int:
        """Blocks in the target tier (or a faster one) so far."""
    def progress(self) -> dict[str, int]:
        """Counts so far: blocks, ready, missing, failed, cancelled, pending."""
    def done(self) -> bool:
        """Whether every block is settled."""
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits (GIL released) at most ``timeout`` seconds (None: until done);
        returns whether every block is settled."""
    def result(self, timeout: Optional[float] = None) -> dict[str, int]:
        """Waits, then returns progress(); TimeoutError when not done in time. Failed
        blocks do not raise: see errors()."""
    def cancel(self) -> None:
        """Stops the prefetch before its next chunk; moved blocks stay. Does not wait."""
    def detach(self) -> None:
        """Lets the prefetch run to its end even when the handle is dropped."""
    def statuses(self) -> list[str]:
        """Per block: "pending", "moved", "resident", "missing", "cancelled" or
        "failed"."""
    def errors(self) -> list[tuple[int, CascadeError]]:
        """(index, exception) of each failed block so far (TierFullError,
        CorruptError, IoError, ...)."""
    def __await__(self) -> Generator[Any, None, dict[str, int]]: ...

@final
class GetBatchHandle:
    """A batch read running in the background (CascadeStore.get_batch_async).
    Dropping the handle cancels the reads not started and waits for the others.
    ``await handle`` waits in the loop's default executor and returns ``result()``."""

    def done(self) -> bool:
        """Whether the read is done and result() returns at once."""
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits (GIL released) at most ``timeout`` seconds (None: until done);
        returns whether the read is done."""
    def result(self, timeout: Optional[float] = None) -> list[Optional[int]]:
        """What get_batch returns (size per block, None when absent), raising the
        first failure (``context["index"]`` names the block; a block the read did not
        reach before cancel() raises UnavailableError); TimeoutError when not done in
        time."""
    def cancel(self) -> None:
        """Stops the read before its next chunk of blocks. Does not wait."""
    def __await__(self) -> Generator[Any, None, list[Optional[int]]]: ...

@final
class CascadeStore:
    """A hierarchical KV-block store. Calls release the GIL while copying."""

    def __new__(cls, config: Optional[CascadeConfig] = None) -> Self: ...
    @classmethod
    def from_toml(cls, path: Union[str, os.PathLike[str]]) -> CascadeStore: ...
    @classmethod
    def from_toml_str(cls, text: str) -> CascadeStore: ...
    def put(self, block_id: _BlockId, data: _Block) -> bool:
        """Stores `data`; True once stored (dedup: an id already stored copies nothing).
        A CUDA tensor is copied device to device into a GPU tier, by DMA into a host
        tier (UnavailableError where no CUDA driver loads; InvalidInputError for a
        tensor on another GPU than the store's). A list of buffers or of CUDA tensors is
        the block's pieces, concatenated in order."""
    def put_content(self, data: _Buffer) -> _BlockId:
        """Hashes `data` with the configured hasher, stores it, returns the id."""
    def get(self, block_id: _BlockId, out: _Block) -> tuple[bool, int]:
        """Copies the block into `out`; (found, size), (False, 0) when absent. A CUDA
        tensor `out` is filled device to device from a GPU tier, by DMA from a host
        tier. A list of outputs (buffers or CUDA tensors, not sharing memory) is filled
        in order."""
    def contains(self, block_id: _BlockId) -> bool: ...
    def __contains__(self, block_id: _BlockId, /) -> bool: ...
    def size_of(self, block_id: _BlockId) -> Optional[int]: ...
    def remove(self, block_id: _BlockId) -> bool: ...
    def put_batch(
        self, block_ids: Sequence[_BlockId], blocks: Union[Sequence[_Block], _Whole]
    ) -> int:
        """Stores many blocks in one call (a list, each item a block or a list of its
        pieces, or one array or tensor whose rows are the blocks; host and CUDA blocks
        may be mixed); returns how many are stored.
        The list items (or the rows of an array of two or more dimensions) must be as
        many as the ids, else InvalidInputError naming both counts; a flat buffer
        (bytes, a 1-D array) splits into equal blocks. An empty batch does nothing."""
    def get_batch(
        self,
        block_ids: Sequence[_BlockId],
        outs: Union[Sequence[_Block], _Whole],
    ) -> list[Optional[int]]:
        """Reads many blocks in one call (into a list of outputs, each an output or a
        list of pieces filled in order, or the rows of one array or tensor; host and
        CUDA outputs may be mixed); size per block, None when
        absent. Outputs (or rows) must be as many as the ids, as for put_batch."""
    def get_batch_async(
        self,
        block_ids: Sequence[_BlockId],
        outs: Union[Sequence[_Block], _Whole],
    ) -> GetBatchHandle:
        """Starts get_batch in the background and returns at once, so the load overlaps
        the caller's compute; ``handle.result()`` (or ``await handle``) returns what
        get_batch returns. The outputs must not be touched before the handle is done.
        Outputs in device memory or in pieces are read before this returns."""
    def prefetch(
        self, block_ids: Sequence[_BlockId], tier: Optional[Union[str, int]] = None
    ) -> PrefetchHandle:
        """Starts moving blocks into the fastest tier that takes them and has room (or
        into ``tier``, a name or position) in the background; returns at once. A get of
        a block being moved waits for it instead of reading it twice. Dropping the
        handle cancels the prefetch unless it is detached. InvalidInputError for an
        unknown tier."""
    def prefetch_prefix(
        self, keys: Sequence[_BlockId], tier: Optional[Union[str, int]] = None
    ) -> PrefetchHandle:
        """prefetch of the leading stored keys of a token-prefix chain (as many as
        lookup_prefix counts: ``len(handle)``)."""
    def lookup_prefix(self, keys: Sequence[_BlockId]) -> int:
        """How many leading keys of a token-prefix chain are stored."""
    def get_stats(self) -> dict[str, Any]:
        """Counters of the store and of each tier: blocks, bytes, hits, misses, puts,
        dedup_hits, dedup_bytes_saved, evictions, demotions, promotions, prefetched,
        prefetch_hits, prefetch_wasted, ..., tiers (one dict per tier)."""
    def metrics_text(self) -> str:
        """The store's counters, per-tier gauges and put/get latency histograms in the
        Prometheus text format: what ``metrics_listen`` in the TOML serves over HTTP
        (names and meanings in docs/operations.md)."""
    def refresh(self) -> dict[str, Any]:
        """Picks up blocks other processes sharing a tier's storage (a file tier's
        directory) stored or removed since this store opened: ``{"added": int,
        "removed": int, "tiers": [{"name", "added", "replaced", "removed"}, ...]}``."""
    def ids(self) -> list[_BlockId]: ...
    @property
    def tiers(self) -> list[str]:
        """Names of the tiers that opened, fastest first."""
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class ClusterStore:
    """One store across every rank of an MPI job (run under mpirun / srun), with the
    CascadeStore API over host buffers. Opening and close() are collective. Only in
    wheels built with the `cluster` feature; otherwise constructing it raises
    UnsupportedError."""

    def __new__(cls, config: Optional[CascadeConfig] = None) -> Self: ...
    @classmethod
    def from_toml(cls, path: Union[str, os.PathLike[str]]) -> ClusterStore: ...
    @classmethod
    def from_toml_str(cls, text: str) -> ClusterStore: ...
    @property
    def rank(self) -> int: ...
    @property
    def ranks(self) -> int: ...
    @property
    def direct_reads(self) -> bool:
        """Whether blocks of ranks on this node are copied from their shm pools (checked
        against their stored checksum) rather than sent over MPI; settable. On unless
        CASCADE_CLUSTER_DIRECT_READS=0 at open."""
    @direct_reads.setter
    def direct_reads(self, on: bool) -> None: ...
    def owner(self, block_id: _BlockId) -> int:
        """The rank that records which ranks hold `block_id`."""
    def put(self, block_id: _BlockId, data: _Buffer) -> bool:
        """Stores `data` on this rank unless (dedup on) some rank holds it already."""
    def put_content(self, data: _Buffer) -> _BlockId: ...
    def get(self, block_id: _BlockId, out: _Buffer) -> tuple[bool, int]:
        """Copies the block into `out` from this rank or the rank holding it; a failed
        or corrupt transfer is (False, 0)."""
    def contains(self, block_id: _BlockId) -> bool: ...
    def __contains__(self, block_id: _BlockId, /) -> bool: ...
    def size_of(self, block_id: _BlockId) -> Optional[int]: ...
    def remove(self, block_id: _BlockId) -> bool:
        """Removes the block from every rank holding it."""
    def put_batch(
        self, block_ids: Sequence[_BlockId], blocks: Union[Sequence[_Buffer], _Buffer]
    ) -> int: ...
    def get_batch(
        self, block_ids: Sequence[_BlockId], outs: Union[Sequence[_Buffer], _Buffer]
    ) -> list[Optional[int]]: ...
    def lookup_prefix(self, keys: Sequence[_BlockId]) -> int:
        """How many leading keys some rank holds."""
    def get_stats(self) -> dict[str, Any]:
        """This rank's counters (remote_hits, of them direct_hits read straight from a pool
        on this node, ...); `local` is its CascadeStore's get_stats()."""
    def totals(self) -> dict[str, int]:
        """Blocks and bytes over all ranks (collective)."""
    def barrier(self) -> None:
        """Waits for every rank (collective)."""
    def refresh(self) -> dict[str, Any]: ...
    def ids(self) -> list[_BlockId]:
        """Ids this rank holds."""
    @property
    def tiers(self) -> list[str]: ...
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None:
        """Collective: waits for every rank, stops the progress thread, flushes."""
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def compute_block_id(data: _Buffer) -> _BlockId:
    """The documented content id: SHA-256 of the bytes, first 16 bytes as 32 hex chars."""

def compute_block_ids(blocks: Sequence[_Buffer]) -> list[_BlockId]:
    """compute_block_id of each block, hashed in parallel."""

def tier_kinds() -> list[str]:
    """The tier kinds compiled into this build, sorted."""

class Backend:
    """One tier used on its own: no index, no dedup, no movement between tiers."""

    def put(self, block_id: _BlockId, data: Any) -> bool:
        """Stores a host buffer (or, on a GPUBackend, a CUDA tensor); replaces the id."""
    def get(self, block_id: _BlockId, out: Any) -> tuple[bool, int]: ...
    def put_batch(self, block_ids: Sequence[_BlockId], blocks: Any) -> int:
        """A list of blocks, or one array or tensor whose rows are the blocks (as many
        as the ids)."""
    def get_batch(self, block_ids: Sequence[_BlockId], outs: Any) -> list[Optional[int]]:
        """A list of outputs, or one array or tensor whose rows receive the blocks (as
        many as the ids)."""
    def contains(self, block_id: _BlockId) -> bool: ...
    def __contains__(self, block_id: _BlockId, /) -> bool: ...
    def size_of(self, block_id: _BlockId) -> Optional[int]: ...
    def remove(self, block_id: _BlockId) -> bool: ...
    def ids(self) -> list[_BlockId]: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def flush(self) -> None: ...
    def get_stats(self) -> dict[str, Any]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...

@final
class ShmBackend(Backend):
    """The shared-memory tier: a pool file (default under /dev/shm), kept across opens."""

    def __new__(cls, capacity: int, path: str = "") -> Self: ...

@final
class MemoryBackend(Backend):
    """The process-memory tier (not persistent)."""

    def __new__(cls, capacity: int) -> Self: ...

@final
class LustreBackend(Backend):
    """The file tier: segment files in a directory, kept across opens."""

    def __new__(cls, path: Union[str, os.PathLike[str]], capacity: int = 0) -> Self: ...

@final
class GPUBackend(Backend):
    """The GPU tier: device memory on `device_id`; takes host buffers and CUDA tensors
    (__cuda_array_interface__ or DLPack). Raises UnavailableError without a GPU."""

    def __new__(cls, capacity: int, device_id: int = 0) -> Self: ...
    @property
    def card(self) -> str: ...

def prefix_keys(
    tokens: Sequence[int], block_tokens: int, namespace: Union[bytes, str, None] = None
) -> list[_BlockId]:
    """One chained key per full block of `block_tokens` tokens (for lookup_prefix)."""

def prefix_key(
    parent: Optional[_BlockId], tokens: Sequence[int], namespace: Union[bytes, str, None] = None
) -> _BlockId:
    """The key of the block `tokens` after the block keyed `parent` (None: first)."""

def prefix_namespace(
    model: str,
    dtype: str = "",
    layout: str = "",
    tp_rank: int = 0,
    tp_size: int = 1,
    salt: Union[bytes, str, None] = None,
) -> bytes:
    """Namespace bytes separating models, dtypes, layouts and tensor-parallel shards."""
