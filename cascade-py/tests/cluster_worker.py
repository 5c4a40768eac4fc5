"""One rank of the ClusterStore checks; run by test_cluster.py under mpirun:
``mpirun -n 2 python cluster_worker.py DIR``."""

import sys

import numpy as np

import cascade

KIB = 1024


def block(rank: int, i: int, size: int) -> np.ndarray:
    return np.random.default_rng(rank * 1000 + i).integers(0, 256, size, dtype=np.uint8)


def main(directory: str) -> None:
    config = cascade.CascadeConfig(
        shm_capacity_bytes=16 << 20, shm_path=f"{directory}/pool-{{rank}}.shm"
    )
    with cascade.ClusterStore(config) as store:
        rank, ranks = store.rank, store.ranks
        size = 64 * KIB
        mine = [block(rank, i, size) for i in range(8)]
        ids = [cascade.compute_block_id(b) for b in mine]
        assert store.put_batch(ids, mine) == 8
        store.barrier()
        other = (rank + 1) % ranks
        theirs = [block(other, i, size) for i in range(8)]
        their_ids = [cascade.compute_block_id(b) for b in theirs]
        # Single get and a batch of another rank's blocks, byte for byte.
        out = np.zeros(size, dtype=np.uint8)
        assert store.get(their_ids[0], out) == (True, size)
        assert np.array_equal(out, theirs[0])
        outs = np.zeros((8, size), dtype=np.uint8)
        assert store.get_batch(their_ids, outs) == [size] * 8
        assert all(np.array_equal(outs[i], theirs[i]) for i in range(8))
        assert their_ids[3] in store
        assert store.size_of(their_ids[3]) == size
        assert store.lookup_prefix(their_ids + ["0" * 32]) == 8
        missing = store.get("ab" * 16, out)
        assert missing == (False, 0), missing
        # Every rank puts the same blocks: stored once over the cluster.
        shared = [block(99, i, size) for i in range(4)]
        shared_ids = [cascade.compute_block_id(b) for b in shared]
        store.put_batch(shared_ids, shared)
        store.barrier()
        totals = store.totals()
        assert totals["blocks"] == 8 * ranks + 4, totals
        stats = store.get_stats()
        assert stats["remote_hits"] == 9, stats
        # Every rank of the test runs on this machine: with direct reads on (the
        # default), each remote block came straight from its holder's shm pool.
        assert store.direct_reads is True
        assert stats["direct_hits"] == 9, stats
        store.direct_reads = False
        out[:] = 0
        assert store.get(their_ids[1], out) == (True, size)
        assert np.array_equal(out, theirs[1])
        assert store.get_stats()["direct_hits"] == 9
        store.direct_reads = True
        assert stats["local"]["blocks"] >= 8
        store.barrier()
    try:
        store.get(ids[0], out)
    except cascade.InvalidInputError:
        pass
    else:
        raise AssertionError("a closed store must refuse calls")
    # A second store in the same process: MPI stays initialised until exit.
    with cascade.ClusterStore(config) as again:
        assert again.get(ids[0], out) == (True, size)
    print(f"rank {rank}: cluster checks passed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
