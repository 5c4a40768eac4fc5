"""Python put/get of 128 KiB numpy blocks, single calls and batches, against the same
workload run from Rust in the same process (cascade._native._NativeBench), on the
same store configuration, in the same run.

    python cascade-py/benches/python_vs_rust.py [--blocks 2000] [--size 131072]
        [--batch 64] [--repeats 5] [--pool /dev/shm] [--cascade-bench target/release/cascade-bench]

Prints one table (medians over the repeats, GB/s = 1e9 bytes/s) and the per-call
overhead of single Python calls: (Python time - Rust time) / calls, in microseconds,
at the block size given and at 64-byte blocks (where the copy is negligible).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import cascade
from cascade import _native


def shm_config(args, pool_dir, name):
    """The store both sides open: one shm tier, its pool in a fresh file."""
    return cascade.CascadeConfig(
        shm_capacity_bytes=args.capacity, shm_path=os.path.join(pool_dir, f"{name}.pool")
    )


def arena(size, count):
    """Blocks as an engine's KV pool: rows of one array, each on a 4 KiB boundary, as
    the Rust side lays them out (copy speed here depends on alignment)."""
    stride = -(-size // 4096) * 4096
    raw = np.zeros(stride * count + 4096, dtype=np.uint8)
    start = (-raw.ctypes.data) % 4096
    return [raw[start + i * stride : start + i * stride + size] for i in range(count)]


def python_passes(store, blocks, outs, ids, batch, repeats):
    t = {"put_single": [], "get_single": [], "put_batch": [], "get_batch": []}
    put, get = store.put, store.get
    for _ in range(repeats):
        store.clear()
        start = time.perf_counter()
        for block_id, block in zip(ids, blocks):
            put(block_id, block)
        t["put_single"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for block_id, out in zip(ids, outs):
            get(block_id, out)
        t["get_single"].append(time.perf_counter() - start)
        store.clear()
        chunks = [(ids[i : i + batch], blocks[i : i + batch], outs[i : i + batch]) for i in range(0, len(ids), batch)]
        start = time.perf_counter()
        for id_chunk, block_chunk, _ in chunks:
            store.put_batch(id_chunk, block_chunk)
        t["put_batch"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for id_chunk, _, out_chunk in chunks:
            store.get_batch(id_chunk, out_chunk)
        t["get_batch"].append(time.perf_counter() - start)
    store.clear()
    return t


def measure(args, size, blocks_count, pool_dir, tag):
    rng = np.random.default_rng(0)
    blocks = arena(size, blocks_count)
    blocks_flat = rng.integers(0, 256, (blocks_count, size), dtype=np.uint8)
    for block, values in zip(blocks, blocks_flat):
        block[:] = values
    outs = arena(size, blocks_count)
    for out in outs:
        out[:] = 1
    ids = [f"{0xBE9C00000000 + i:032x}" for i in range(blocks_count)]
    store = cascade.CascadeStore(shm_config(args, pool_dir, f"python-{tag}"))
    native = _native._NativeBench(shm_config(args, pool_dir, f"rust-{tag}"), size, blocks_count)
    py = {k: [] for k in ("put_single", "get_single", "put_batch", "get_batch")}
    rust = {k: [] for k in py}
    for _ in range(args.repeats):
        for key, seconds in python_passes(store, blocks, outs, ids, args.batch, 1).items():
            py[key] += seconds
        for key, seconds in native.run(args.batch, 1).items():
            rust[key] += seconds
    # Every block read back must equal the one written (checked once, untimed).
    store.put_batch(ids, blocks)
    store.get_batch(ids, outs)
    assert all(np.array_equal(a, b) for a, b in zip(blocks, outs)), "bytes differ"
    store.close()
    return py, rust


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128 * 1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pool", default="/dev/shm", help="directory of the shm pool files")
    parser.add_argument("--cascade-bench", default=None, metavar="PATH",
                        help="also run this cascade-bench binary's shm row (same blocks, size, batch) in the same run")
    args = parser.parse_args()
    args.capacity = max(args.blocks * args.size * 2, 64 << 20)

    with tempfile.TemporaryDirectory(dir=args.pool, prefix="cascade-pybench-") as pool_dir:
        py, rust = measure(args, args.size, args.blocks, pool_dir, "big")
        small_py, small_rust = measure(args, 64, args.blocks, pool_dir, "small")

    total = args.size * args.blocks
    print(f"cascade-py {cascade.__version__}: {args.blocks} blocks of {args.size} B, "
          f"batches of {args.batch}, shm tier, medians of {args.repeats}")
    print("| operation | Python GB/s | Rust GB/s | Python / Rust |")
    print("|---|---|---|---|")
    for key, label in [("put_single", "put, single calls"), ("get_single", "get, single calls"),
                       ("put_batch", f"put_batch of {args.batch}"), ("get_batch", f"get_batch of {args.batch}")]:
        p, r = statistics.median(py[key]), statistics.median(rust[key])
        print(f"| {label} | {total / p / 1e9:.2f} | {total / r / 1e9:.2f} | {r / p * 100:.0f}% |")
    print()
    print("| per-call overhead of single Python calls (Python - Rust) / call | put us | get us |")
    print("|---|---|---|")
    for label, p, r, n in [(f"{args.size} B blocks", py, rust, args.blocks), ("64 B blocks", small_py, small_rust, args.blocks)]:
        put_us = (statistics.median(p["put_single"]) - statistics.median(r["put_single"])) / n * 1e6
        get_us = (statistics.median(p["get_single"]) - statistics.median(r["get_single"])) / n * 1e6
        print(f"| {label} | {put_us:.2f} | {get_us:.2f} |")
    print()
    print("64 B blocks, per call (us): "
          + ", ".join(f"{k} Python {statistics.median(small_py[k]) / args.blocks * 1e6:.2f} / Rust {statistics.median(small_rust[k]) / args.blocks * 1e6:.2f}"
                      for k in ("put_single", "get_single")))

    if args.cascade_bench:
        cascade_bench_row(args)


def cascade_bench_row(args):
    """cascade-bench's per-tier shm figures for the same blocks, size and batch."""
    with tempfile.TemporaryDirectory() as out_dir:
        out = os.path.join(out_dir, "bench.json")
        command = [
            args.cascade_bench, "--section", "tiers", "--tier", "shm",
            "--blocks", str(args.blocks), "--size", f"{args.size}B",
            "--batch", str(args.batch), "--repeat", str(args.repeats), "--json", out,
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            report = json.load(f)
    for row in report.get("tiers") or []:
        if row.get("kind") == "shm" and "write_gbps" in row:
            print(f"\ncascade-bench, same run ({' '.join(command[1:-2])}): shm write "
                  f"{row['write_gbps']['median']:.2f} GB/s, read {row['read_gbps']['median']:.2f} GB/s")


if __name__ == "__main__":
    main()
