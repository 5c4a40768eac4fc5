"""The README's Python quickstart: store a numpy block and read it back.

    pip install ./cascade-py numpy
    python examples/python_quickstart.py

This is the documented snippet with only the import line changed (`cascade_cpp` was the
C++ module). Its shared-memory tier is the default one, the same 1 GiB pool at
/dev/shm/cascade-<uid>-shm.pool that the embedded Rust deployment uses, so the two share
blocks (a pool reopened with another capacity is refused, never resized). On a machine without a GPU the 4 GiB GPU tier is skipped with a
TierUnavailableWarning and the block lands in shared memory.
"""

import numpy as np

import cascade

config = cascade.CascadeConfig()
config.gpu_capacity_bytes = 4 * 1024**3
store = cascade.CascadeStore(config)

# Store block
data = np.random.randint(0, 256, 128 * 1024, dtype=np.uint8)
block_id = cascade.compute_block_id(data)
store.put(block_id, data)

# Retrieve
out = np.zeros_like(data)
found, size = store.get(block_id, out)

assert found and size == data.nbytes and np.array_equal(out, data)
print(f"stored and read back block {block_id} ({size} bytes) via tiers {store.tiers}")
print({k: v for k, v in store.get_stats().items() if k != "tiers"})
