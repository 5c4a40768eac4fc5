"""Prefetch and asynchronous loads: an engine that knows which blocks it will need moves
them from the file tier into shared memory while it computes, then loads them without
waiting for the disk.

    pip install ./cascade-py numpy
    python examples/prefetch.py

The store lives in a temporary directory (a 4 MiB shm pool over a file tier) and is
removed at the end.
"""

import asyncio
import tempfile
import time

import numpy as np

import cascade

BLOCK = 128 * 1024


def compute(seconds: float) -> None:
    """Stands in for the engine's forward pass."""
    time.sleep(seconds)


with tempfile.TemporaryDirectory() as tmp:
    config = cascade.CascadeConfig(
        shm_capacity_bytes=4 * 1024**2,
        shm_path=f"{tmp}/pool.shm",
        lustre_path=f"{tmp}/files",
        promote_on_read=False,
    )
    with cascade.CascadeStore(config) as store:
        # A prompt's KV, 64 blocks: more than shm holds, so the first ones spill to files.
        tokens = list(range(64 * 16))
        keys = cascade.prefix_keys(tokens, 16)
        blocks = [np.full(BLOCK, i % 251, np.uint8) for i in range(len(keys))]
        store.put_batch(keys, blocks)

        # The next request shares the first 16 blocks of the prefix: start moving them
        # up, then compute while they move.
        handle = store.prefetch_prefix(keys[:16])
        compute(0.05)
        handle.wait(timeout=10)
        print("prefetch:", handle.progress())

        # Load them in the background and do more work meanwhile.
        outs = np.zeros((16, BLOCK), np.uint8)
        load = store.get_batch_async(keys[:16], outs)
        compute(0.01)
        assert load.result(timeout=10) == [BLOCK] * 16
        assert all(np.array_equal(outs[i], blocks[i]) for i in range(16))

        # The same from asyncio: both handles can be awaited.
        async def restore():
            prefetch = store.prefetch(keys[16:24])
            more = np.zeros((8, BLOCK), np.uint8)
            sizes = await store.get_batch_async(keys[16:24], more)
            await prefetch
            return sizes

        assert asyncio.run(restore()) == [BLOCK] * 8
        stats = store.get_stats()
        print({k: stats[k] for k in ("prefetched", "prefetch_hits", "prefetch_wasted")})
