"""Checks and times the device paths on a machine with a GPU and PyTorch.

    python cascade-py/benches/gpu_torch.py [--blocks 2000] [--size 131072]

Checks (each prints "ok: ..." or "FAILED: ..." with its traceback, and the run goes on):
- GPUBackend takes torch CUDA tensors through __cuda_array_interface__ (float16) and
  DLPack (bfloat16, and any tensor wrapped to hide the interface), single and batch, and
  gives them back into CUDA tensors byte for byte;
- a tensor still being written by kernels on a side stream is stored only after that
  stream finished (the producer's stream is synchronized first);
- host memory (torch CPU tensors, through DLPack) goes into and out of the GPU tier;
- CascadeStore with gpu_capacity_bytes opens the GPU tier above shm without a warning,
  and takes CUDA tensors in put_batch / get_batch / get (device to device).
Times (medians of 5, same run): GPUBackend put_batch / get_batch of CUDA tensors against
torch copying the same blocks one by one and in one copy; CascadeStore put_batch /
get_batch of CUDA tensors (device to device) and of host tensors through the GPU tier.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
import traceback
import warnings

import torch

import cascade

FAILED = []


class DlpackOnly:
    """Hides __cuda_array_interface__ so that the DLPack path is the one taken."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, *args, **kwargs):
        return self.tensor.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()


def check(name, run):
    try:
        run()
        print(f"ok: {name}", flush=True)
    except Exception:  # noqa: BLE001 - reported, and the other checks still run
        FAILED.append(name)
        print(f"FAILED: {name}", flush=True)
        traceback.print_exc()


def median_time(run, repeats=5):
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128 * 1024)
    args = parser.parse_args()
    n, size = args.blocks, args.size
    print(f"cascade {cascade.__version__}, torch {torch.__version__}, kinds {cascade.tier_kinds()}")

    gpu = cascade.GPUBackend(4 * n * size, device_id=0)
    print(f"GPUBackend on {gpu.card}: capacity {gpu.capacity}")
    dev = torch.device("cuda:0")
    # One KV pool, rows = blocks. float16: torch exports __cuda_array_interface__ for
    # it (not for bfloat16, which goes through DLPack).
    src = torch.randn(n, size // 2, dtype=torch.float16, device=dev)
    dst = torch.empty_like(src)
    src_rows, dst_rows = list(src), list(dst)
    ids = [f"{0xC0DA0000 + i:032x}" for i in range(n)]

    def side_stream_batch():
        side = torch.cuda.Stream()
        a = torch.randn(4096, 4096, device=dev)
        with torch.cuda.stream(side):
            for _ in range(20):
                a = a @ a / 64.0
            rows = list(a.view(torch.int32)[:64])  # 64 blocks of 16 KiB, still being written
            gpu.put_batch([f"{0xABC0 + i:032x}" for i in range(64)], rows)
        side.synchronize()
        back = torch.empty_like(a.view(torch.int32)[:64])
        gpu.get_batch([f"{0xABC0 + i:032x}" for i in range(64)], list(back))
        assert torch.equal(back, a.view(torch.int32)[:64])

    def single():
        out = torch.empty_like(src[0])
        gpu.put(ids[0], src[0])
        assert gpu.get(ids[0], out) == (True, size) and torch.equal(out, src[0])
        gpu.put(ids[1], DlpackOnly(src[1]))
        assert gpu.get(ids[1], DlpackOnly(out)) == (True, size) and torch.equal(out, src[1])
        bf16 = src[2].view(torch.bfloat16)
        gpu.put(ids[2], bf16)
        back = torch.empty_like(bf16)
        assert gpu.get(ids[2], back) == (True, size)
        assert torch.equal(back.view(torch.int16), bf16.view(torch.int16))

    def batch():
        assert gpu.put_batch(ids, src_rows) == n
        dst.zero_()
        assert gpu.get_batch(ids, dst_rows) == [size] * n
        assert torch.equal(dst, src)

    def whole_tensor():
        gpu.clear()
        assert gpu.put_batch(ids, src) == n  # one DLPack export for all rows
        dst.zero_()
        assert gpu.get_batch(ids, dst) == [size] * n
        assert torch.equal(dst, src)

    def side_stream():
        side = torch.cuda.Stream()
        a = torch.randn(4096, 4096, device=dev)
        with torch.cuda.stream(side):
            for _ in range(20):
                a = a @ a / 64.0
            produced = a.flatten()[: size // 4].contiguous()
            gpu.put("f" * 32, produced)
        side.synchronize()
        back = torch.empty_like(produced)
        gpu.get("f" * 32, back)
        # Compare bits: the matmul chain may well hold NaNs, and NaN != NaN.
        assert torch.equal(back.view(torch.int32), produced.view(torch.int32))

    def host_tensors():
        host = src[3].cpu()
        gpu.put("e" * 32, host)
        out = torch.zeros_like(host)
        assert gpu.get("e" * 32, out) == (True, size) and torch.equal(out, host)

    check("single put/get of CUDA tensors (cuda_array_interface, DLPack, bfloat16)", single)
    check(f"put_batch/get_batch of {n} CUDA blocks round trip", batch)
    check(f"put_batch/get_batch with one ({n}, {size // 2}) tensor whose rows are the blocks", whole_tensor)
    check("a tensor written on a side stream is stored after that stream finished", side_stream)
    check("a batch of tensors written on a side stream is stored after that stream finished", side_stream_batch)
    check("torch CPU tensors (DLPack) in and out of the GPU tier", host_tensors)

    rows = []
    bytes_total = n * size
    shm_free = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    pool_parent = "/dev/shm" if shm_free > 4 * bytes_total else None
    print(f"/dev/shm free: {shm_free >> 20} MiB; shm pool under {pool_parent or tempfile.gettempdir()}")
    with tempfile.TemporaryDirectory(dir=pool_parent) as pool_dir:
        config = cascade.CascadeConfig(
            gpu_capacity_bytes=2 * bytes_total,
            shm_capacity_bytes=2 * bytes_total,
            shm_path=f"{pool_dir}/pool.shm",
        )
        store_box = []

        def store_opens():
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                store_box.append(cascade.CascadeStore(config))
            store = store_box[0]
            assert store.tiers == ["gpu", "shm"], store.tiers
            block = src[4].cpu().view(torch.uint8)
            block_id = cascade.compute_block_id(block)
            store.put(block_id, block)
            got = torch.zeros_like(block)
            assert store.get(block_id, got) == (True, size) and torch.equal(got, block)
            assert store.get_stats()["tiers"][0]["blocks"] == 1

        check("CascadeStore opens gpu above shm with no warning; host block round trip", store_opens)
        if store_box:
            store = store_box[0]
            host_blocks = list(src.cpu().view(torch.uint8))
            host_outs = list(torch.empty_like(src, device="cpu").view(torch.uint8))

            def store_put():
                store.clear()
                store.put_batch(ids, host_blocks)

            host_pool = src.cpu().view(torch.uint8)

            def store_put_whole():
                store.clear()
                store.put_batch(ids, host_pool)

            def store_cuda_round_trip():
                store.clear()
                assert store.put_batch(ids, src) == n
                dst.zero_()
                assert store.get_batch(ids, dst) == [size] * n
                assert torch.equal(dst, src)
                out = torch.empty_like(src[0])
                assert store.get(ids[5], out) == (True, size) and torch.equal(out, src[5])
                assert store.get_stats()["tiers"][0]["blocks"] == n

            check("CascadeStore put_batch/get_batch/get of CUDA tensors (device to device)", store_cuda_round_trip)

            def store_put_cuda_whole():
                store.clear()
                store.put_batch(ids, src)

            def store_put_cuda_list():
                store.clear()
                store.put_batch(ids, src_rows)

            rows.append(("CascadeStore.put_batch, one CUDA tensor, rows = blocks (device to device)", median_time(store_put_cuda_whole)))
            rows.append(("CascadeStore.get_batch, one CUDA tensor, rows = blocks", median_time(lambda: store.get_batch(ids, dst))))
            rows.append(("CascadeStore.put_batch, list of CUDA tensors", median_time(store_put_cuda_list)))
            rows.append(("CascadeStore.get_batch, list of CUDA tensors", median_time(lambda: store.get_batch(ids, dst_rows))))
            rows.append(("CascadeStore.put_batch, host tensors into the GPU tier", median_time(store_put)))
            rows.append(("CascadeStore.put_batch, one host tensor, rows = blocks", median_time(store_put_whole)))
            rows.append(("CascadeStore.get_batch, GPU tier into host tensors", median_time(lambda: store.get_batch(ids, host_outs))))
            assert all(torch.equal(a, b) for a, b in zip(host_blocks, host_outs))
            print(f"store stats: { {k: v for k, v in store.get_stats().items() if k != 'tiers'} }")
            store.close()

    def per_block_copy():
        for d, s in zip(dst_rows, src_rows):
            d.copy_(s)

    gpu.clear()
    rows.insert(0, ("GPUBackend.put_batch, CUDA tensors (device to device)", median_time(lambda: (gpu.clear(), gpu.put_batch(ids, src_rows)))))
    rows.insert(1, ("GPUBackend.get_batch, CUDA tensors (device to device)", median_time(lambda: gpu.get_batch(ids, dst_rows))))
    rows.insert(2, ("GPUBackend.put_batch, one CUDA tensor, rows = blocks", median_time(lambda: (gpu.clear(), gpu.put_batch(ids, src)))))
    rows.insert(3, ("GPUBackend.get_batch, one CUDA tensor, rows = blocks", median_time(lambda: gpu.get_batch(ids, dst))))
    rows.insert(4, ("torch: copy_ per block (baseline)", median_time(per_block_copy)))
    rows.insert(5, ("torch: one copy_ of all blocks (ceiling)", median_time(lambda: dst.copy_(src))))
    t0 = time.perf_counter()
    for row in src_rows[:200]:
        row.__dlpack__(stream=1)
    dlpack_us = (time.perf_counter() - t0) / 200 * 1e6
    t0 = time.perf_counter()
    for row in src_rows[:200]:
        row.__cuda_array_interface__
    cai_us = (time.perf_counter() - t0) / 200 * 1e6
    print(f"torch export cost per tensor: __dlpack__(stream=1) {dlpack_us:.1f} us, __cuda_array_interface__ {cai_us:.1f} us")
    print()
    print(f"| {n} blocks of {size} B on {gpu.card}, medians of 5 | GB/s |")
    print("|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {bytes_total / seconds / 1e9:.1f} |")
    print(f"\n{len(FAILED)} failed checks: {FAILED}" if FAILED else "\nall checks passed")


if __name__ == "__main__":
    main()
