#!/usr/bin/env python3
"""HDF5 peer of cascade-bench: KV blocks stored through h5py, in two layouts.

  datasets  one HDF5 file, one dataset per block
  chunked   one HDF5 file, one dataset of shape (blocks, size), one chunk per block

Each repetition writes a fresh file per layout (block by block, then flush, close and
fsync), drops the file from the page cache (posix_fadvise DONTNEED), and reads every block
back into one preallocated array, checking the bytes. Prints one JSON object on stdout.
Exit status 3 means h5py (or numpy) is not installed; cascade-bench then skips the peer.
"""

import argparse
import json
import os
import sys
import time

try:
    import h5py
    import numpy as np
except ImportError as exc:  # the bench reports this as the reason for skipping
    print(f"h5py not installed ({exc}); scripts/install-peers.sh installs it", file=sys.stderr)
    sys.exit(3)


def durable_close(f, path):
    f.flush()
    f.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_datasets(path, data):
    start = time.perf_counter()
    f = h5py.File(path, "w")
    for i in range(data.shape[0]):
        f.create_dataset(f"b{i}", data=data[i])
    durable_close(f, path)
    return time.perf_counter() - start


def read_datasets(path, out):
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        for i in range(out.shape[0]):
            f[f"b{i}"].read_direct(out, dest_sel=np.s_[i])
    return time.perf_counter() - start


def write_chunked(path, data):
    start = time.perf_counter()
    f = h5py.File(path, "w")
    ds = f.create_dataset("blocks", shape=data.shape, dtype=np.uint8, chunks=(1, data.shape[1]))
    for i in range(data.shape[0]):
        ds[i] = data[i]
    durable_close(f, path)
    return time.perf_counter() - start


def read_chunked(path, out):
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["blocks"]
        for i in range(out.shape[0]):
            ds.read_direct(out, source_sel=np.s_[i], dest_sel=np.s_[i])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--blocks", type=int, required=True)
    parser.add_argument("--size", type=int, required=True, help="bytes per block")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    data = np.frombuffer(np.random.default_rng(7).bytes(args.blocks * args.size), dtype=np.uint8)
    data = data.reshape(args.blocks, args.size)
    out = np.zeros_like(data)
    total = data.nbytes
    layouts = {"datasets": (write_datasets, read_datasets), "chunked": (write_chunked, read_chunked)}
    results = {}
    for name, (write, read) in layouts.items():
        writes, reads = [], []
        for rep in range(args.repeat + 1):  # repetition 0 is an untimed warm-up
            path = os.path.join(args.dir, f"{name}-{rep}.h5")
            w = write(path, data)
            out.fill(0)
            r = read(path, out)
            if not np.array_equal(out, data):
                print(f"{name}: bytes read back differ from bytes written", file=sys.stderr)
                sys.exit(1)
            os.remove(path)
            if rep > 0:
                writes.append(total / w / 1e9)
                reads.append(total / r / 1e9)
        results[name] = {"write_gbps": writes, "read_gbps": reads}
    print(json.dumps({"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "layouts": results}))


if __name__ == "__main__":
    main()
