"""LMCache's StorageManager on CPU: the Cascade plugin against LMCache's own backends.

    python cascade-py/benches/lmcache_backends.py [--chunks 2000] [--batch 64] [--rounds 3]

Needs LMCache (0.5.x) and the cascade wheel in one environment; no GPU. One StorageManager
per Cascade layout and one for LMCache's own, all built and their CPU pools touched
before any timing, every layout measured once per round, rounds
interleaved (this machine's speed drifts: compare layouts within a round):

- ``LocalCPUBackend``: LMCache's CPU backend;
- ``LocalDiskBackend``: LMCache's disk backend (one file per chunk), cold read (the same
  StorageManager as the CPU backend's, as LMCache deploys it);
- ``cascade (shm over files)``: the plugin over a Cascade deployment of shm (large enough
  for every chunk) above a file tier: reads are served from shm;
- ``cascade (file tier)``: the plugin over a file tier alone, cold read.

Workload (the same for every layout, as an engine drives LMCache): chunks of
``[2, 2, 256, 64]`` bfloat16 (128 KiB) whose bytes sit in one source tensor (the KV the
engine offloads). A write is, per batch of ``--batch`` chunks: ``batched_allocate`` in
LMCache's CPU pool, copy the chunks' bytes in, ``batched_put(location=layout)``, release;
the time runs until the layout holds every chunk (LocalDisk and the plugin's background
writer finish; files are not fsynced). A read is, per batch: ``batched_get(location=
layout)``, copy each chunk out into a destination tensor (the KV the engine loads),
release; before the first batch, the read looks every chunk up with
``batched_contains(pin=True)`` and after the last it unpins them, as LMCache's engine
does for each request (its lookup pins, its retrieval reads, then ``lookup_unpin``); the
lookup is in the read's time. ``--no-lookup`` reads without it (the workload of the runs
before 2026-12-04); ``--readahead-mib`` sets the plugin's read-ahead window (its default
otherwise). A second table splits each layout's read into the lookup, the time inside
``batched_get`` and the copy out (medians over rounds, ms). Cold: before the read, every
file of the layout is fsynced and dropped from the page cache
(``posix_fadvise(DONTNEED)``). Each round uses new chunk keys, so nothing is
deduplicated against an earlier round. Every chunk read is compared with what was
written (outside the timing). ``--warmup`` untimed rounds come first (this VM runs
memory untouched for a while at a fraction of its speed). torch uses one intra-op thread.
GB/s = 1e9 bytes/s, medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig
from lmcache.v1.event_manager import EventManager
from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.pin_monitor import PinMonitor
from lmcache.v1.storage_backend.storage_manager import StorageManager

SHAPE = torch.Size([2, 2, 256, 64])
CHUNK_BYTES = SHAPE.numel() * 2


def metadata() -> LMCacheMetadata:
    return LMCacheMetadata(
        model_name="bench",
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.bfloat16,
        kv_shape=(2, 2, 256, 1, 64),
        role="worker",
    )


def manager(
    cpu_gb: float,
    disk: str | None = None,
    cascade_toml: str | None = None,
    readahead_mib: int | None = None,
):
    cfg: dict = {"chunk_size": 256, "local_cpu": True, "max_local_cpu_size": cpu_gb}
    if disk is not None:
        cfg.update(local_disk=disk, max_local_disk_size=8.0)
    if cascade_toml is not None:
        cfg["storage_plugins"] = ["cascade"]
        cfg["extra_config"] = {
            "storage_plugin.cascade.module_path": "cascade.integrations.lmcache",
            "storage_plugin.cascade.class_name": "CascadeBackend",
            "storage_plugin.cascade.config": cascade_toml,
        }
        if readahead_mib is not None:
            cfg["extra_config"]["storage_plugin.cascade.readahead_mib"] = readahead_mib
    config = LMCacheEngineConfig.from_dict(cfg)
    # LMCache's engine starts the monitor that pinned chunks register with; a
    # StorageManager alone does not.
    PinMonitor.GetOrCreate(config)
    sm = StorageManager(config, metadata(), EventManager())
    OPEN.append(sm)
    return sm


#: Every StorageManager made, closed on the way out (LMCache's threads keep a process
#: alive otherwise).
OPEN: list = []


def cascade_toml(root: Path, shm_bytes: int | None) -> str:
    text = "dedup = true\npromote_on_read = false\n"
    if shm_bytes is not None:
        text += (
            f'[[tiers]]\nkind = "shm"\nname = "shm"\ncapacity = {shm_bytes}\n'
            f'path = "{root}/pool.shm"\n'
        )
    text += f'[[tiers]]\nkind = "file"\nname = "file"\ncapacity = "8 GiB"\npath = "{root}/files"\n'
    path = root / "cascade.toml"
    path.write_text(text)
    return str(path)


def drop_page_cache(directory: Path) -> None:
    for dirpath, _, names in os.walk(directory):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm_pool(sm) -> None:
    """Touches every page of LMCache's CPU pool: on this VM, memory not touched since it
    was mapped first runs at a fraction of its speed."""
    held = []
    while True:
        objs = sm.batched_allocate(
            SHAPE, torch.bfloat16, 64, MemoryFormat.KV_2LTD, eviction=False, busy_loop=False
        )
        if not objs:
            break
        for obj in objs:
            obj.tensor.zero_()
        held += objs
    for obj in held:
        obj.ref_count_down()


class Layout:
    def __init__(self, label, sm, location, files=None):
        self.label, self.sm, self.location, self.files = label, sm, location, files
        self.write: list[float] = []
        self.read: list[float] = []
        # Per round, seconds: the lookup, inside batched_get, the copy out.
        self.phases: list[tuple[float, float, float]] = []

    @property
    def backend(self):
        return self.sm.storage_backends[self.location]

    def wait_stored(self, keys) -> None:
        deadline = time.monotonic() + 600
        backend = self.backend
        while time.monotonic() < deadline:
            if not any(backend.exists_in_put_tasks(k) for k in keys[-64:]) and all(
                backend.contains(k) for k in (keys[0], keys[-1])
            ):
                if not any(backend.exists_in_put_tasks(k) for k in keys):
                    return
            time.sleep(0.001)
        raise RuntimeError(f"{self.label}: writes did not finish")


def run_round(
    layout: Layout, src: torch.Tensor, dst: torch.Tensor, batch: int, rnd: int, lookup: bool
):
    n = src.shape[0]
    keys = [
        CacheEngineKey("bench", 1, 0, (rnd << 40) | (hash(layout.label) & 0xFFFFFF) << 16 | i,
                       torch.bfloat16)
        for i in range(n)
    ]
    sm, loc = layout.sm, layout.location
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        ks = keys[s : s + batch]
        objs = sm.batched_allocate(SHAPE, torch.bfloat16, len(ks), MemoryFormat.KV_2LTD)
        if objs is None:
            raise RuntimeError("LMCache's CPU pool is full: raise --cpu-gb")
        for j, obj in enumerate(objs):
            obj.tensor.copy_(src[s + j])
        sm.batched_put(ks, objs, location=loc)
    layout.wait_stored(keys)
    t1 = time.perf_counter()
    if layout.files is not None:
        drop_page_cache(layout.files)
    t2 = time.perf_counter()
    if lookup:
        hits, _ = sm.batched_contains(keys, [loc], pin=True)
        if hits != n:
            raise RuntimeError(f"{layout.label}: the lookup found {hits} of {n} chunks")
    t_lookup = time.perf_counter() - t2
    t_get = t_copy = 0.0
    for s in range(0, n, batch):
        ks = keys[s : s + batch]
        a = time.perf_counter()
        objs = sm.batched_get(ks, location=loc)
        b = time.perf_counter()
        for j, obj in enumerate(objs):
            if obj is None:
                raise RuntimeError(f"{layout.label}: chunk {s + j} missing on read")
            dst[s + j].copy_(obj.tensor)
            obj.ref_count_down()
        t_get += b - a
        t_copy += time.perf_counter() - b
    t3 = time.perf_counter()
    if lookup:
        sm.batched_unpin(keys, [loc])
    if not torch.equal(src.view(torch.int16), dst.view(torch.int16)):
        raise RuntimeError(f"{layout.label}: read bytes differ from written bytes")
    dst.zero_()
    # LMCache copies what another backend served into its CPU backend; free that and
    # the layout's copies so every round starts alike.
    sm.batched_remove(keys, locations=[loc, "LocalCPUBackend"])
    layout.write.append(n * CHUNK_BYTES / (t1 - t0) / 1e9)
    layout.read.append(n * CHUNK_BYTES / (t3 - t2) / 1e9)
    layout.phases.append((t_lookup, t_get, t_copy))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu-gb", type=float, default=0.75)
    ap.add_argument("--dir", default=None, help="where files go (default: a temp dir)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument(
        "--readahead-mib",
        type=int,
        default=None,
        help="the Cascade plugin's read-ahead window (default: the plugin's own)",
    )
    ap.add_argument(
        "--no-lookup",
        action="store_true",
        help="read without LMCache's pinned lookup first (no read-ahead for the plugin)",
    )
    args = ap.parse_args()
    # One intra-op thread for every layout's per-chunk copies: on a 2-core machine
    # shared with other work, torch's thread pool made each 128 KiB copy several times
    # slower and far noisier.
    torch.set_num_threads(1)

    root = Path(tempfile.mkdtemp(prefix="lmcache-bench-", dir=args.dir))
    total = args.chunks * CHUNK_BYTES
    try:
        lmcache_own = manager(args.cpu_gb, disk=str(root / "disk"))
        layouts = [
            Layout("LMCache LocalCPUBackend", lmcache_own, "LocalCPUBackend"),
            Layout(
                "LMCache LocalDiskBackend (cold read)",
                lmcache_own,
                "LocalDiskBackend",
                files=root / "disk",
            ),
        ]
        (root / "c1").mkdir()
        layouts.append(
            Layout(
                "Cascade plugin, shm over files (read from shm)",
                manager(
                    args.cpu_gb,
                    cascade_toml=cascade_toml(root / "c1", 2 * total + (64 << 20)),
                    readahead_mib=args.readahead_mib,
                ),
                "cascade",
            )
        )
        (root / "c2").mkdir()
        layouts.append(
            Layout(
                "Cascade plugin, file tier (cold read)",
                manager(
                    args.cpu_gb,
                    cascade_toml=cascade_toml(root / "c2", None),
                    readahead_mib=args.readahead_mib,
                ),
                "cascade",
                files=root / "c2" / "files",
            )
        )
        for sm in {id(l.sm): l.sm for l in layouts}.values():
            warm_pool(sm)
        gen = torch.Generator().manual_seed(7)
        src = torch.randint(-(2**15), 2**15, (args.chunks, *SHAPE), dtype=torch.int16, generator=gen)
        src = src.view(torch.bfloat16)
        dst = torch.zeros_like(src)
        dst.add_(0)  # touch every page before timing
        for rnd in range(args.warmup):
            for layout in layouts:
                run_round(layout, src, dst, args.batch, 1000 + rnd, not args.no_lookup)
        for layout in layouts:
            layout.write.clear()
            layout.read.clear()
            layout.phases.clear()
        for rnd in range(args.rounds):
            for layout in layouts:
                run_round(layout, src, dst, args.batch, rnd, not args.no_lookup)
                print(
                    f"round {rnd + 1} {layout.label}: write {layout.write[-1]:.2f} "
                    f"read {layout.read[-1]:.2f} GB/s",
                    file=sys.stderr,
                    flush=True,
                )
        print(f"\n{args.chunks} chunks of {CHUNK_BYTES // 1024} KiB, batches of {args.batch}, "
              f"medians of {args.rounds} rounds (GB/s), "
              f"{'reads without a lookup' if args.no_lookup else 'pinned lookup, then reads'}\n")
        print("| layout | write GB/s | read GB/s | per round (write / read) |")
        print("|---|---|---|---|")
        for l in layouts:
            rounds = ", ".join(f"{w:.2f} / {r:.2f}" for w, r in zip(l.write, l.read))
            print(f"| {l.label} | {statistics.median(l.write):.2f} | "
                  f"{statistics.median(l.read):.2f} | {rounds} |")
        cpu, disk, shm, files = layouts
        print("\n| comparison (median of per-round ratios) | ratio | goal |")
        print("|---|---|---|")
        for what, a, b, goal in [
            ("Cascade shm read / LocalCPU read", shm.read, cpu.read, 1.0),
            ("Cascade shm write / LocalCPU write", shm.write, cpu.write, None),
            ("Cascade file-tier cold read / LocalDisk cold read", files.read, disk.read, 2.0),
            ("Cascade file-tier write / LocalDisk write", files.write, disk.write, None),
        ]:
            r = statistics.median(x / y for x, y in zip(a, b))
            verdict = "" if goal is None else (f">= {goal:g}x: " + ("met" if r >= goal else "NOT met"))
            print(f"| {what} | {r:.2f}x | {verdict} |")
        print("\n| layout | lookup ms | in batched_get ms | copy out ms | per round (lookup / get / copy) |")
        print("|---|---|---|---|---|")
        for l in layouts:
            med = [statistics.median(p[k] for p in l.phases) * 1e3 for k in range(3)]
            rounds = ", ".join(" / ".join(f"{x * 1e3:.0f}" for x in p) for p in l.phases)
            print(f"| {l.label} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {rounds} |")
    finally:
        for sm in OPEN:
            sm.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
