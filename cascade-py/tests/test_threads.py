"""Many Python threads on one store: the GIL is released during copies, and every
thread reads back exactly what it wrote."""

import threading

import numpy as np

import cascade
from conftest import KIB


def test_many_threads_round_trip(store):
    threads, per_thread, size = 8, 40, 16 * KIB
    errors = []

    def worker(seed):
        try:
            rng = np.random.default_rng(seed)
            blocks = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(per_thread)]
            ids = [f"{seed:08x}{i:024x}" for i in range(per_thread)]
            half = per_thread // 2
            for block_id, block in zip(ids[:half], blocks[:half]):
                store.put(block_id, block)
            store.put_batch(ids[half:], blocks[half:])
            out = np.zeros(size, np.uint8)
            for block_id, block in zip(ids[:half], blocks[:half]):
                assert store.get(block_id, out) == (True, size)
                assert np.array_equal(out, block)
            outs = [np.zeros(size, np.uint8) for _ in blocks[half:]]
            assert store.get_batch(ids[half:], outs) == [size] * (per_thread - half)
            for block, got in zip(blocks[half:], outs):
                assert np.array_equal(got, block)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert len(store) == threads * per_thread


def test_threads_hashing_and_reading_the_same_blocks(store):
    rng = np.random.default_rng(7)
    blocks = [rng.integers(0, 256, 32 * KIB, dtype=np.uint8) for _ in range(16)]
    ids = cascade.compute_block_ids(blocks)
    store.put_batch(ids, blocks)
    failures = []

    def reader():
        out = np.zeros(32 * KIB, np.uint8)
        for _ in range(5):
            for block_id, block in zip(ids, blocks):
                if cascade.compute_block_id(block) != block_id:
                    failures.append("hash")
                store.get(block_id, out)
                if not np.array_equal(out, block):
                    failures.append(block_id)

    pool = [threading.Thread(target=reader) for _ in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert failures == []
