"""Time to first token: recomputing a prompt's prefix against restoring it with cascade.kv.

    python cascade-py/benches/kv_ttft.py --out results.json            # Llama-3-8B shape, GPU
    python cascade-py/benches/kv_ttft.py --tiny --device cpu            # a dry run anywhere

A LlamaForCausalLM of Llama-3-8B's shape (32 layers, hidden 4096, intermediate 14336, 32
heads, 8 KV heads, vocabulary 128256, bf16) with random weights (seed 0; nothing is
downloaded). For each prefix length P, request A (P tokens + a 64-token suffix) is
prefilled and its KV saved; request B (the same P tokens + another suffix) is answered by
recomputing it whole (TTFT = the full prefill, last token's logits) and by restoring the
prefix from each store and prefilling only the suffix:

- gpu:  a store with a GPU tier (blocks restored device to device);
- shm:  a store with only a shared-memory tier: cascade.kv hands it CUDA tensors and the
        store copies by DMA straight between its pool (registered with CUDA) and the GPU;
        the same run also restores through host memory as cascade.kv did before
        (`HostStaged`: read into a pinned buffer in 256 MiB chunks, each copied up while
        the next is read), the baseline of the direct path;
- file: a store with only a file tier, its page cache dropped (posix_fadvise DONTNEED on
        every file, and /proc/sys/vm/drop_caches where writable) before each restore; the
        same run reads the same segment files sequentially, cold, as the raw-read baseline,
        and times the read half of a restore three ways (direct with one and with two
        readers, host-staged).

On the GPU the shm restore is also timed with more readers (--read-threads), and at
--paged-prefix lengths a paged pool is saved and restored through cascade.kv (pages
gathered and scattered on the GPU around one CUDA row tensor per batch) against handing
the store each block as its 2 x layers pages (lists of CUDA tensors).

Every restore's suffix logits are compared bit for bit with the logits computed from
request A's original KV of the same prefix. Then a multi-turn chat (each turn's prompt
extends the last): the fraction of prompt tokens restored and the bytes stored once.
Figures are medians; everything is printed and written to --out as JSON as it goes.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import cascade
from cascade import kv

RESULTS = {"cases": [], "errors": []}


def emit(out, **record):
    print(json.dumps(record), flush=True)
    RESULTS["cases"].append(record)
    if out:
        with open(out, "w") as f:
            json.dump(RESULTS, f, indent=1)


def guarded(label, run):
    """`run()`'s dict of figures, or {} with the error recorded: an extra measurement that
    fails does not cost its case's record."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001 - reported, the case still runs
        RESULTS["errors"].append(f"{label}: {e!r}")
        traceback.print_exc()
        return {}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warmed_median(device, run, repeats):
    """One untimed call, then the median time of `repeats` calls and the last value."""
    run()
    times = []
    value = None
    for _ in range(max(1, repeats)):
        t, value = timed(device, run)
        times.append(t)
    return statistics.median(times), value


def timed(device, run):
    sync(device)
    start = time.perf_counter()
    value = run()
    sync(device)
    return time.perf_counter() - start, value


def build_model(tiny, device):
    torch.manual_seed(0)
    if tiny:
        config = LlamaConfig(
            vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=70000,
        )
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    else:
        config = LlamaConfig(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=40960,
            rope_theta=500000.0,
        )
        dtype = torch.bfloat16
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def drop_page_cache(directory):
    """Drops the page cache of every file under `directory`; True when the kernel-wide
    drop also worked."""
    for path in glob.glob(os.path.join(directory, "**"), recursive=True):
        if os.path.isfile(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def raw_sequential_read(directory, chunk=64 << 20):
    """Reads every segment file under `directory` front to back (one thread, 64 MiB
    reads); returns (bytes, seconds)."""
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    total = 0
    start = time.perf_counter()
    for path in sorted(glob.glob(os.path.join(directory, "*.seg"))):
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [view])
                if n == 0:
                    break
                total += n
        finally:
            os.close(fd)
    return total, time.perf_counter() - start


@torch.no_grad()
def prefill(model, ids, keep=0):
    return model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=keep)


def cropped(cache, tokens):
    pairs = [(layer.keys[:, :, :tokens].clone(), layer.values[:, :, :tokens].clone()) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=pairs)


def stores(args, device, workdir):
    """(name, open-store function, is cold file tier) of each case."""
    gib = 1 << 30
    shm_dir = args.shm_dir
    cases = []
    if device.type == "cuda":
        cases.append((
            "gpu",
            lambda: cascade.CascadeStore(cascade.CascadeConfig(
                gpu_capacity_bytes=args.gpu_tier_gib * gib, gpu_required=True,
                shm_capacity_bytes=64 << 20, shm_path=os.path.join(shm_dir, "kvbench-gpu.pool"))),
            False,
        ))
    cases.append((
        "shm",
        lambda: cascade.CascadeStore(cascade.CascadeConfig(
            shm_capacity_bytes=args.shm_tier_gib * gib, shm_path=os.path.join(shm_dir, "kvbench-shm.pool"))),
        False,
    ))
    cases.append(("file", None, True))
    return cases


CHUNK_BYTES = 256 << 20


class HostStaged:
    """The restore cascade.kv did before it handed CUDA tensors to host tiers, kept here
    as the baseline of the same run: the blocks are read with get_batch into a pinned host
    buffer kept between calls, in 256 MiB chunks, each copied to the GPU on a side stream
    while the next is read; the rows then become a DynamicCache as cascade.kv's do."""

    def __init__(self, cache_obj):
        self.cache = cache_obj
        self.pinned = None
        self.free = None

    def reserve(self, nbytes):
        """The pinned buffer, at least `nbytes` (pinning is slow: kept between calls)."""
        if self.free is not None:
            self.free.synchronize()
        if self.pinned is None or self.pinned.numel() < nbytes:
            self.pinned = None
            self.pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return self.pinned[:nbytes]

    def rows(self, tokens, device, max_tokens):
        layout = self.cache.layout
        keys = self.cache.keys(tokens)[: -(-max_tokens // layout.block_tokens)]
        count = self.cache.store.lookup_prefix(keys)
        host = self.reserve(count * layout.block_bytes).view(-1, layout.block_bytes)
        rows = torch.empty((count, layout.block_bytes), dtype=torch.uint8, device=device)
        per_chunk = max(1, CHUNK_BYTES // layout.block_bytes)
        stream = torch.cuda.Stream(device=device)
        with torch.cuda.stream(stream):
            for start in range(0, count, per_chunk):
                end = min(count, start + per_chunk)
                got, cut = self.cache._get_rows(keys[start:end], host[start:end])
                if got != end - start:
                    raise RuntimeError(f"host-staged read cut at block {start + got}: {cut}")
                # Queued behind the earlier chunks' copies; the next chunk is read meanwhile.
                rows[start:end].copy_(host[start:end], non_blocking=True)
        self.free = torch.cuda.Event()
        self.free.record(stream)
        torch.cuda.current_stream(device).wait_stream(stream)
        rows.record_stream(stream)
        return rows, count

    def restore(self, tokens, device, max_tokens, config):
        layout = self.cache.layout
        rows, count = self.rows(tokens, device, max_tokens)
        covered = min(count * layout.block_tokens, max_tokens)
        blocks = rows.view(layout.torch_dtype()).view(
            count, layout.num_layers, 2, layout.block_tokens, layout.num_kv_heads, layout.head_dim
        )
        # One permute for every layer: [blocks, L, 2, T, H, D] -> [L, 2, H, tokens, D].
        tokens_first = blocks.permute(1, 2, 4, 0, 3, 5).reshape(
            layout.num_layers, 2, layout.num_kv_heads, count * layout.block_tokens, layout.head_dim
        )
        pairs = []
        for index in range(layout.num_layers):
            k = tokens_first[index, 0, :, :covered].unsqueeze(0)
            v = tokens_first[index, 1, :, :covered].unsqueeze(0)
            if covered < count * layout.block_tokens:
                k, v = k.contiguous(), v.contiguous()
            pairs.append((k, v))
        return kv.Restored(covered, count, kv.dynamic_cache(pairs, config))


def read_half(cache_obj, tokens, device, max_tokens):
    """The read half of cache_obj.restore alone (lookup, then every group of batches read
    into its staging tensor on `device`); how many blocks were read."""
    keys = cache_obj._stored_run(tokens, max_tokens)
    done, _ = cache_obj._read_groups(keys, device, lambda start, rows: None)
    return done


def shm_ceilings(store, cache_obj, ids, layout, device, repeats):
    """What the restores are made of, alone: the store's read of the blocks straight
    into GPU memory (one get_batch, DMA from the registered pool), its read into pinned
    host memory, a plain copy of the same bytes between two host buffers (torch, all
    cores), and the pinned-to-GPU copy."""
    keys = cache_obj.keys(ids)
    n = store.lookup_prefix(keys)
    nbytes = n * layout.block_bytes
    pinned = torch.empty((n, layout.block_bytes), dtype=torch.uint8, pin_memory=True)
    pageable = torch.empty((n, layout.block_bytes), dtype=torch.uint8)
    gpu = torch.empty((n, layout.block_bytes), dtype=torch.uint8, device=device)
    pageable.fill_(1)
    pinned.fill_(2)

    def rate(run):
        times = [timed(device, run)[0] for _ in range(repeats + 1)][1:]
        return nbytes / statistics.median(times) / 1e9

    return dict(
        store_get_batch_to_gpu_GBps=rate(lambda: store.get_batch(keys[:n], gpu)),
        store_get_batch_to_pinned_GBps=rate(lambda: store.get_batch(keys[:n], pinned)),
        host_copy_to_pinned_GBps=rate(lambda: pinned.copy_(pageable)),
        pinned_to_gpu_GBps=rate(lambda: gpu.copy_(pinned, non_blocking=True)),
    )


@torch.no_grad()
def paged_pieces(store, layout, tokens, original, device, repeats, name):
    """A paged pool restored by restore_into (pages gathered and scattered on the GPU
    around one CUDA row tensor per batch) against the store filling each page itself,
    given every block as its 2 x layers pages (a list of CUDA tensors, the gather/scatter
    form of put_batch / get_batch); the same for saving. Returns the figures, after
    checking that both ways give the same pool bytes."""
    paged = kv.KVLayout.paged(layout.num_layers, layout.num_kv_heads, layout.head_dim, layout.block_tokens, layout.dtype)
    bt, heads, dim = layout.block_tokens, layout.num_kv_heads, layout.head_dim
    n = tokens.shape[1] // bt
    pools = []
    for k, v in kv.cache_pairs(original):
        pair = []
        for x in (k, v):
            pair.append(x[0, :, : n * bt].reshape(heads, n, bt, dim).permute(1, 2, 0, 3).contiguous())
        pools.append(tuple(pair))
    table = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()

    def pieces_of(pool_set):
        return [[page for k, v in pool_set for page in (k[t], v[t])] for t in table]

    def median_s(run):
        return statistics.median([timed(device, run)[0] for _ in range(repeats + 1)][1:])

    rows_cache = kv.KVCache(store, paged, name + " paged rows")
    pieces_keys = kv.KVCache(store, paged, name + " paged pieces").keys(tokens)[:n]
    rows_save = timed(device, lambda: rows_cache.save(tokens, pools, block_table=table))[0]
    pieces_save = timed(device, lambda: store.put_batch(pieces_keys, pieces_of(pools)))[0]
    by_rows = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in pools]
    by_pieces = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in pools]
    rows_restore = median_s(lambda: rows_cache.restore_into(tokens, by_rows, table))
    pieces_restore = median_s(lambda: store.get_batch(pieces_keys, pieces_of(by_pieces)))
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[0], p[0])
               for a, b, p in zip(by_rows, by_pieces, pools))
    nbytes = n * layout.block_bytes
    for key in pieces_keys:
        store.remove(key)
    return dict(
        paged_blocks=n, pieces_per_block=2 * layout.num_layers, paged_identical=same,
        save_rows_GBps=nbytes / rows_save / 1e9, save_pieces_GBps=nbytes / pieces_save / 1e9,
        restore_into_rows_GBps=nbytes / rows_restore / 1e9, get_batch_pieces_GBps=nbytes / pieces_restore / 1e9,
    )


@torch.no_grad()
def ttft_cases(args, model, device, workdir, layout):
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    name = "kv_ttft random Llama seed 0" + (" tiny" if args.tiny else "")
    opened = {}
    for case, opener, _ in stores(args, device, workdir):
        if opener is not None:
            try:
                opened[case] = opener()
                print(f"store {case}: tiers {opened[case].tiers}", flush=True)
            except Exception as e:  # noqa: BLE001 - reported, the other cases still run
                RESULTS["errors"].append(f"open {case}: {e!r}")
                print(f"FAILED to open {case}: {e!r}", flush=True)
    for prefix_len in args.prefix:
        prefix = torch.randint(0, vocab, (1, prefix_len), generator=g)
        a = torch.cat([prefix, torch.randint(0, vocab, (1, args.suffix), generator=g)], 1).to(device)
        b = torch.cat([prefix, torch.randint(0, vocab, (1, args.suffix), generator=g)], 1).to(device)
        original = prefill(model, a, keep=1).past_key_values
        # Recompute: the whole of request B, first token's logits.
        times = []
        for _ in range(args.repeats + 1):
            t, _ = timed(device, lambda: prefill(model, b, keep=1))
            times.append(t)
        recompute = statistics.median(times[1:])
        emit(args.out, case="recompute", prefix=prefix_len, ttft_ms=recompute * 1e3, runs_ms=[x * 1e3 for x in times])
        reference = model(b[:, prefix_len:], past_key_values=cropped(original, prefix_len), use_cache=True).logits
        kv_bytes = (prefix_len // layout.block_tokens) * layout.block_bytes

        def restore_once(cache_obj):
            def run():
                restored = cache_obj.restore(b, device=device, max_tokens=b.shape[1] - 1, config=model.config)
                logits = model(b[:, restored.tokens :], past_key_values=restored.cache, use_cache=True).logits
                return restored, logits
            return run

        def staged_once(staged):
            def run():
                restored = staged.restore(b, device, b.shape[1] - 1, model.config)
                logits = model(b[:, restored.tokens :], past_key_values=restored.cache, use_cache=True).logits
                return restored, logits
            return run

        for case, _, cold in stores(args, device, workdir):
            try:
                if cold:
                    directory = os.path.join(workdir, f"file-{prefix_len}")
                    shutil.rmtree(directory, ignore_errors=True)

                    def open_file():
                        return cascade.CascadeStore(cascade.CascadeConfig(
                            shm_capacity_bytes=0, lustre_path=directory,
                            lustre_capacity_bytes=max(kv_bytes * 2, 1 << 30), promote_on_read=False))

                    with open_file() as store:
                        save_s, saved = timed(device, lambda: kv.KVCache(store, layout, name).save(a, original))
                    runs, read_runs, staged_read_runs, two_read_runs, raws = [], [], [], [], []
                    staged = None
                    if device.type == "cuda":
                        staged = HostStaged(None)
                        staged.reserve(kv_bytes)
                    dropped = False
                    for _ in range(args.cold_repeats):
                        with open_file() as store:
                            cache_obj = kv.KVCache(store, layout, name)
                            dropped = drop_page_cache(directory)
                            start = time.perf_counter()
                            count = read_half(cache_obj, b, device, b.shape[1] - 1)
                            sync(device)
                            read_runs.append(time.perf_counter() - start)

                            def cold_read(read, into, label):
                                # The read half once more, another way, after its own drop.
                                nonlocal dropped
                                dropped = drop_page_cache(directory) and dropped
                                try:
                                    start = time.perf_counter()
                                    rows = read()
                                    sync(device)
                                    into.append(time.perf_counter() - start)
                                    del rows
                                except Exception as e:  # noqa: BLE001 - reported, the case goes on
                                    RESULTS["errors"].append(f"{label} {prefix_len}: {e!r}")
                                    traceback.print_exc()

                            two = kv.KVCache(store, layout, name, read_threads=2)
                            cold_read(lambda: read_half(two, b, device, b.shape[1] - 1), two_read_runs, "cold 2 readers")
                            if staged is not None:
                                staged.cache = cache_obj
                                cold_read(lambda: staged.rows(b, device, b.shape[1] - 1), staged_read_runs, "cold host-staged")
                            dropped = drop_page_cache(directory) and dropped
                            t, (restored, logits) = timed(device, restore_once(cache_obj))
                            runs.append(t)
                        drop_page_cache(directory)
                        raws.append(raw_sequential_read(directory))
                    seg_bytes = raws[0][0]
                    raw_rate = statistics.median(n / s for n, s in raws)
                    read_rate = count * layout.block_bytes / statistics.median(read_runs)
                    # Warm raw read, to show the drop took effect.
                    warm = raw_sequential_read(directory)
                    extra = dict(
                        cold_read_GBps=read_rate / 1e9, raw_cold_read_GBps=raw_rate / 1e9,
                        read_vs_raw=read_rate / raw_rate, raw_warm_read_GBps=warm[0] / warm[1] / 1e9,
                        segment_bytes=seg_bytes, drop_caches_written=dropped, save_ms=save_s * 1e3,
                    )
                    if two_read_runs:
                        extra["cold_read_2_threads_GBps"] = count * layout.block_bytes / statistics.median(two_read_runs) / 1e9
                    if staged_read_runs:
                        staged_rate = count * layout.block_bytes / statistics.median(staged_read_runs)
                        extra.update(cold_read_host_staged_GBps=staged_rate / 1e9, host_staged_vs_raw=staged_rate / raw_rate)
                    del staged
                    shutil.rmtree(directory, ignore_errors=True)
                else:
                    store = opened.get(case)
                    if store is None:
                        continue
                    cache_obj = kv.KVCache(store, layout, name)
                    save_s, saved = timed(device, lambda: cache_obj.save(a, original))
                    extra = dict(save_ms=save_s * 1e3)
                    staged_runs = []
                    if case == "shm" and device.type == "cuda":
                        extra.update(guarded(f"ceilings {prefix_len}", lambda: shm_ceilings(
                            store, cache_obj, b, layout, device, args.repeats)))
                        # The same restore reading several batches at once.
                        for threads in args.read_threads:
                            def more_readers():
                                more = kv.KVCache(store, layout, name, read_threads=threads)
                                more_runs = [timed(device, restore_once(more))[0] for _ in range(args.repeats + 1)][1:]
                                return {f"ttft_read_threads_{threads}_ms": statistics.median(more_runs) * 1e3}
                            extra.update(guarded(f"read_threads {threads} {prefix_len}", more_readers))
                        if prefix_len in args.paged_prefix:
                            extra.update(guarded(f"paged {prefix_len}", lambda: paged_pieces(
                                store, layout, a, original, device, args.repeats, name)))
                    staged = HostStaged(cache_obj) if case == "shm" and device.type == "cuda" else None
                    runs = []
                    # Direct and host-staged restores alternate, so both see the same machine.
                    for _ in range(args.repeats + 1):
                        t, (restored, logits) = timed(device, restore_once(cache_obj))
                        runs.append(t)
                        if staged is not None:
                            try:
                                t, (s_restored, s_logits) = timed(device, staged_once(staged))
                                staged_runs.append(t)
                            except Exception as e:  # noqa: BLE001 - reported, the direct runs go on
                                RESULTS["errors"].append(f"host-staged {prefix_len}: {e!r}")
                                traceback.print_exc()
                                staged = None
                    runs = runs[1:]
                    if staged is not None:
                        staged_ttft = statistics.median(staged_runs[1:])
                        extra.update(
                            ttft_host_staged_ms=staged_ttft * 1e3, host_staged_runs_ms=[x * 1e3 for x in staged_runs[1:]],
                            host_staged_speedup=recompute / staged_ttft,
                            host_staged_bit_identical=bool(torch.equal(s_logits, reference)),
                            host_staged_tokens=s_restored.tokens,
                        )
                        del s_restored, s_logits, staged
                restore_ttft = statistics.median(runs)
                identical = torch.equal(logits, reference)
                emit(
                    args.out, case=case, prefix=prefix_len, restored_tokens=restored.tokens,
                    kv_MiB=kv_bytes / 2**20, saved_blocks=saved.stored, ttft_ms=restore_ttft * 1e3,
                    runs_ms=[x * 1e3 for x in runs], recompute_ms=recompute * 1e3,
                    speedup=recompute / restore_ttft, bit_identical=identical, **extra,
                )
                del restored, logits
            except Exception as e:  # noqa: BLE001 - reported, the other cases still run
                RESULTS["errors"].append(f"{case} {prefix_len}: {e!r}")
                traceback.print_exc()
        del original, reference
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for store in opened.values():
        store.close()


@torch.no_grad()
def chat(args, model, device, layout):
    """Each turn's prompt is the last prompt, the reply and a new user message."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    gib = 1 << 30
    if device.type == "cuda":
        config = cascade.CascadeConfig(
            gpu_capacity_bytes=2 * gib, shm_capacity_bytes=64 << 20,
            shm_path=os.path.join(args.shm_dir, "kvbench-chat.pool"))
    else:
        config = cascade.CascadeConfig(shm_capacity_bytes=1 << 30, shm_path=os.path.join(args.shm_dir, "kvbench-chat.pool"))
    history = torch.randint(0, vocab, (1, args.chat_system), generator=g)
    prompt_tokens = restored_tokens = stored_bytes = whole_prompt_bytes = 0
    restore_total = recompute_total = 0.0
    with cascade.CascadeStore(config) as store:
        cache_obj = kv.KVCache(store, layout, "kv_ttft chat")
        for turn in range(args.chat_turns):
            user = torch.randint(0, vocab, (1, args.chat_user), generator=g)
            ids = torch.cat([history, user], 1).to(device)

            def with_restore():
                restored = cache_obj.restore(ids, device=device, max_tokens=ids.shape[1] - 1, config=model.config)
                cache = restored.cache if restored.cache is not None else DynamicCache(config=model.config)
                out = model(ids[:, restored.tokens :], past_key_values=cache, use_cache=True, logits_to_keep=1)
                return restored, out

            # Each turn's prompt is a length the model has not run yet: one untimed call of
            # each first (kernel selection, allocator growth), then the median of
            # --repeats. A restore only reads the store, so repeating it changes nothing.
            t_rec, full = warmed_median(device, lambda: prefill(model, ids, keep=1), args.repeats)
            t_res, (restored, out) = warmed_median(device, with_restore, args.repeats)
            saved = cache_obj.save(ids, out.past_key_values)
            prompt_tokens += ids.shape[1]
            restored_tokens += restored.tokens
            stored_bytes += saved.bytes_stored
            whole_prompt_bytes += saved.blocks * layout.block_bytes
            recompute_total += t_rec
            restore_total += t_res
            emit(args.out, case="chat-turn", turn=turn, prompt=ids.shape[1], restored=restored.tokens,
                 stored_blocks=saved.stored, skipped_blocks=saved.skipped,
                 recompute_ms=t_rec * 1e3, restore_ms=t_res * 1e3)
            del full, out, restored
            reply = torch.randint(0, vocab, (1, args.chat_reply), generator=g)
            history = torch.cat([ids.cpu(), reply], 1)
        emit(
            args.out, case="chat", turns=args.chat_turns, prompt_tokens=prompt_tokens,
            restored_tokens=restored_tokens, restored_fraction=restored_tokens / prompt_tokens,
            stored_MiB=stored_bytes / 2**20, stored_if_each_prompt_whole_MiB=whole_prompt_bytes / 2**20,
            store_MiB=store.get_stats()["bytes"] / 2**20,
            ttft_total_recompute_ms=recompute_total * 1e3, ttft_total_restore_ms=restore_total * 1e3,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prefix", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--suffix", type=int, default=64)
    parser.add_argument("--block-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-repeats", type=int, default=2)
    parser.add_argument("--gpu-tier-gib", type=int, default=8)
    parser.add_argument("--shm-tier-gib", type=int, default=8)
    parser.add_argument("--shm-dir", default="/dev/shm")
    parser.add_argument("--workdir", default=None, help="file tier directory (on the disk to measure)")
    parser.add_argument("--read-threads", type=int, nargs="*", default=[2, 4],
                        help="read_threads values the shm restore is also timed with (GPU only)")
    parser.add_argument("--paged-prefix", type=int, nargs="*", default=[4096],
                        help="prefix lengths at which a paged pool is also restored both ways (shm, GPU only)")
    parser.add_argument("--chat-turns", type=int, default=8)
    parser.add_argument("--chat-system", type=int, default=2048)
    parser.add_argument("--chat-user", type=int, default=256)
    parser.add_argument("--chat-reply", type=int, default=384)
    parser.add_argument("--chat-only", action="store_true", help="run the chat workload alone")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    workdir = args.workdir or tempfile.mkdtemp(prefix="kvbench-")
    os.makedirs(workdir, exist_ok=True)
    shm = os.statvfs(args.shm_dir)
    shm_free_gib = shm.f_bavail * shm.f_frsize / 2**30
    info = dict(
        python=sys.version.split()[0], torch=torch.__version__, cascade=cascade.__version__,
        transformers=__import__("transformers").__version__, device=str(device),
        card=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        workdir=workdir, shm_dir=args.shm_dir, shm_free_gib=shm_free_gib,
    )
    RESULTS["info"] = info
    print(json.dumps(info), flush=True)
    start = time.perf_counter()
    model = build_model(args.tiny, device)
    layout = kv.KVLayout.from_config(model.config, args.block_tokens, dtype=model.dtype)
    print(f"model built in {time.perf_counter() - start:.1f} s; block {layout.block_bytes / 2**20:.2f} MiB", flush=True)
    try:
        if not args.chat_only:
            ttft_cases(args, model, device, workdir, layout)
    except Exception as e:  # noqa: BLE001
        RESULTS["errors"].append(f"ttft: {e!r}")
        traceback.print_exc()
    try:
        chat(args, model, device, layout)
    except Exception as e:  # noqa: BLE001
        RESULTS["errors"].append(f"chat: {e!r}")
        traceback.print_exc()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(RESULTS, f, indent=1)
    print("errors:", RESULTS["errors"], flush=True)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
