"""Cascade: a hierarchical KV-cache store for LLM inference.

KV blocks live in tiers ordered fastest first (GPU HBM, ``/dev/shm``, a parallel file
system) behind one sharded index, optionally named by their content so identical blocks
are stored once. The API follows the documented Cascade module::

    import numpy as np
    import cascade

    config = cascade.CascadeConfig()
    store = cascade.CascadeStore(config)
    data = np.random.randint(0, 256, 128 * 1024, dtype=np.uint8)
    block_id = cascade.compute_block_id(data)
    store.put(block_id, data)
    out = np.zeros_like(data)
    found, size = store.get(block_id, out)

Every call that copies or does I/O releases the GIL. Errors are ``CascadeError``
subclasses, one per error kind.
"""

from ._native import (
    Backend,
    GPUBackend,
    LustreBackend,
    MemoryBackend,
    ShmBackend,
    BusyError,
    CascadeConfig,
    CascadeError,
    CascadeStore,
    ConfigError,
    CorruptError,
    GetBatchHandle,
    IncompatibleError,
    InvalidInputError,
    IoError,
    NotFoundError,
    PluginError,
    PrefetchHandle,
    TierFullError,
    TierUnavailableWarning,
    TooLargeError,
    UnavailableError,
    UnsupportedError,
    __version__,
    compute_block_id,
    compute_block_ids,
    prefix_key,
    prefix_keys,
    prefix_namespace,
    tier_kinds,
)

try:
    # Present in wheels built with the `cluster` feature (needs MPI; docs/cluster.md).
    from ._native import ClusterStore
except ImportError:

    class ClusterStore:  # type: ignore[no-redef]
        """One store across MPI ranks: not in this build of cascade."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise UnsupportedError(
                "this build of cascade has no cluster support: build the wheel with "
                "`maturin build --release -m cascade-py/Cargo.toml --features gpu,cluster` "
                "on a machine with MPI (docs/cluster.md)"
            )


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
    "ClusterStore",
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
