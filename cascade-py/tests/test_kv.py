"""cascade.kv end to end with a real transformer: a tiny Llama (2 layers, grouped-query
attention) on the CPU, its KV saved, restored, and the logits compared bit for bit with
the logits computed from the original KV. The same model on a GPU, where there is one,
checks that CUDA KV goes to every kind of store and back as CUDA tensors.

Needs torch and transformers (.ci/run's kv step installs them in their own virtualenv);
elsewhere the module is skipped with that reason, unless CASCADE_REQUIRE_TORCH=1 makes a
missing torch an error. The GPU tests skip without a CUDA device (CASCADE_REQUIRE=gpu
makes that a failure).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cascade

if os.environ.get("CASCADE_REQUIRE_TORCH") == "1":
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch", reason="torch is not installed (.ci/run's kv step installs it)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (.ci/run's kv step installs it)")

from cascade import kv  # noqa: E402
from conftest import gpu_available, skip_unless_present  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
BT = 16  # tokens per block
MODEL = "tiny-llama-seed0"

# The model and its helpers are also run by a child process (the file-tier test), so
# they live in one source string.
MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    def tiny_llama():
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        )
        config._attn_implementation = "sdpa"
        return LlamaForCausalLM(config).eval()

    def prompt(n, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (1, n), generator=g)

    def new_cache(config):
        try:
            return DynamicCache(config=config)
        except TypeError:  # transformers 4.x before the layered cache
            return DynamicCache()

    @torch.no_grad()
    def prefill(model, ids):
        out = model(ids, past_key_values=new_cache(model.config), use_cache=True)
        return out.logits, out.past_key_values
    """
)
exec(MODEL_SOURCE)  # noqa: S102 - defines tiny_llama, prompt, prefill


@pytest.fixture(scope="module")
def model():
    return tiny_llama()  # noqa: F821


def layout_of(model, **kwargs):
    return kv.KVLayout.from_config(model.config, BT, dtype="float32", **kwargs)


def shm_store(tmp_path, **kwargs):
    return cascade.CascadeStore(
        cascade.CascadeConfig(shm_capacity_bytes=16 * MIB, shm_path=str(tmp_path / "pool.shm"), **kwargs)
    )


def file_store(directory):
    return cascade.CascadeStore(
        cascade.CascadeConfig(shm_capacity_bytes=0, lustre_path=str(directory), lustre_capacity_bytes=64 * MIB)
    )


pairs_of = kv.cache_pairs  # (key, value) per layer, whichever transformers made it
cache_of = kv.dynamic_cache  # a DynamicCache of pairs, whichever transformers is installed


def cropped(cache, tokens):
    """A copy of `cache` holding its first `tokens` tokens: the original KV of the prefix."""
    return cache_of([(k[:, :, :tokens].clone(), v[:, :, :tokens].clone()) for k, v in pairs_of(cache)])


@torch.no_grad()
def logits_after(model, ids, cache, start):
    return model(ids[:, start:], past_key_values=cache, use_cache=True).logits


def check_restore_matches(model, ids, original, restored):
    """Logits of the rest of `ids` after the restored prefix equal those after the same
    prefix of the original KV, bit for bit."""
    r = restored.tokens
    want = logits_after(model, ids, cropped(original, r), r)
    got = logits_after(model, ids, restored.cache, r)
    assert got.shape == want.shape
    assert torch.equal(got, want), f"logits differ after restoring {r} tokens"


def test_full_hit_is_bit_identical(tmp_path, model):
    ids = prompt(4 * BT + 5)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    with shm_store(tmp_path) as store:
        cache = kv.KVCache(store, layout_of(model), MODEL)
        saved = cache.save(ids, original)
        assert (saved.blocks, saved.stored, saved.skipped) == (4, 4, 0)
        assert saved.bytes_stored == 4 * cache.layout.block_bytes
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert (restored.tokens, restored.blocks, restored.cut) == (4 * BT, 4, None)
        for (k, v), (ok, ov) in zip(pairs_of(restored.cache), pairs_of(original)):
            assert torch.equal(k, ok[:, :, : 4 * BT])
            assert torch.equal(v, ov[:, :, : 4 * BT])
        check_restore_matches(model, ids, original, restored)


def test_every_block_stored_leaves_a_token_to_compute(tmp_path, model):
    ids = prompt(3 * BT)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    with shm_store(tmp_path) as store:
        cache = kv.KVCache(store, layout_of(model), MODEL)
        cache.save(ids, original)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        # The last block is read and cut to leave one token for the model.
        assert (restored.tokens, restored.blocks) == (3 * BT - 1, 3)
        check_restore_matches(model, ids, original, restored)


def test_partial_hit_then_save_skips_stored_blocks(tmp_path, model):
    ids = prompt(5 * BT + 3)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    with shm_store(tmp_path) as store:
        cache = kv.KVCache(store, layout_of(model), MODEL)
        first = cache.save(ids[:, : 2 * BT], cropped(original, 2 * BT))
        assert (first.blocks, first.stored) == (2, 2)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert (restored.tokens, restored.blocks) == (2 * BT, 2)
        check_restore_matches(model, ids, original, restored)
        # Saving the whole prompt looks the stored run up once and writes only the rest.
        before = store.get_stats()["bytes"]
        second = cache.save(ids, original)
        assert (second.blocks, second.stored, second.skipped) == (5, 3, 2)
        assert store.get_stats()["bytes"] - before == 3 * cache.layout.block_bytes
        again = cache.save(ids, original)
        assert (again.stored, again.skipped, again.bytes_stored) == (0, 5, 0)
        assert cache.lookup(ids) == 5 * BT


def test_another_namespace_misses(tmp_path, model):
    ids = prompt(3 * BT + 1)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    with shm_store(tmp_path) as store:
        layout = layout_of(model)
        kv.KVCache(store, layout, MODEL).save(ids, original)
        assert kv.KVCache(store, layout, MODEL).lookup(ids) == 3 * BT
        others = [
            kv.KVCache(store, layout, "another-model"),
            kv.KVCache(store, layout, MODEL, salt="tenant-b"),
            kv.KVCache(store, kv.KVLayout.from_config(model.config, BT, dtype="bfloat16"), MODEL),
            kv.KVCache(store, kv.KVLayout.from_config(model.config, BT, dtype="float32", kind=kv.PAGED), MODEL),
            kv.KVCache(store, kv.KVLayout.from_config(model.config, 2 * BT, dtype="float32"), MODEL),
            kv.KVCache(store, layout, MODEL, tp_rank=1, tp_size=2),
        ]
        for other in others:
            assert other.lookup(ids) == 0
        restored = others[0].restore(ids)
        assert (restored.tokens, restored.cache) == (0, None)


CHILD_SAVE = """
import sys
import cascade
from cascade import kv
{model}
model = tiny_llama()
ids = prompt({n})
_, original = prefill(model, ids)
store = cascade.CascadeStore(cascade.CascadeConfig(
    shm_capacity_bytes=0, lustre_path=sys.argv[1], lustre_capacity_bytes={cap}))
cache = kv.KVCache(store, kv.KVLayout.from_config(model.config, {bt}, dtype="float32"), "{name}")
saved = cache.save(ids, original)
store.close()
print(saved.stored)
"""


def save_in_child(directory, n):
    script = CHILD_SAVE.format(model=MODEL_SOURCE, n=n, cap=64 * MIB, bt=BT, name=MODEL)
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def block_bytes_of(cache, block, layout):
    """The stored bytes of `block` of a transformers cache (LKTHD order)."""
    parts = []
    for pair in pairs_of(cache):
        for tensor in pair:
            page = tensor[0, :, block * BT : (block + 1) * BT, :].permute(1, 0, 2).contiguous()
            parts.append(page.numpy().tobytes())
    data = b"".join(parts)
    assert len(data) == layout.block_bytes
    return data


def test_hit_from_file_tier_after_saver_exited(tmp_path, model):
    directory = tmp_path / "files"
    ids = prompt(4 * BT + 7)  # noqa: F821
    assert save_in_child(directory, ids.shape[1]) == 4
    _, original = prefill(model, ids)  # noqa: F821
    with file_store(directory) as store:
        assert store.tiers == ["file"] or len(store.tiers) == 1
        cache = kv.KVCache(store, layout_of(model), MODEL)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert (restored.tokens, restored.cut) == (4 * BT, None)
        check_restore_matches(model, ids, original, restored)


def test_flipped_byte_in_file_tier_shortens_the_prefix(tmp_path, model):
    directory = tmp_path / "files"
    ids = prompt(4 * BT + 7)  # noqa: F821
    assert save_in_child(directory, ids.shape[1]) == 4
    _, original = prefill(model, ids)  # noqa: F821
    layout = layout_of(model)
    # Find block 2's payload in the segment files and flip one byte in its middle.
    target = block_bytes_of(original, 2, layout)
    flipped = False
    for segment in sorted(directory.glob("*.seg")):
        data = bytearray(segment.read_bytes())
        at = data.find(target)
        if at >= 0:
            data[at + len(target) // 2] ^= 0x40
            segment.write_bytes(bytes(data))
            flipped = True
    assert flipped, "block 2's bytes were not found in the file tier's segments"
    with file_store(directory) as store:
        cache = kv.KVCache(store, layout, MODEL)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert restored.tokens == 2 * BT
        # The store verified the checksum, dropped the block and served nothing for it.
        assert restored.cut in ("corrupt", "missing")
        check_restore_matches(model, ids, original, restored)
        # The bad block was dropped: the next restore stops there without an error.
        assert cache.lookup(ids) == 2 * BT
        # Recomputing and saving again heals the chain.
        healed = cache.save(ids, original)
        assert (healed.skipped, healed.stored) == (2, 2)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert restored.tokens == 4 * BT
        check_restore_matches(model, ids, original, restored)


def make_pools(layout, num_blocks, stacked, fill):
    shape = (num_blocks, layout.block_tokens, layout.num_kv_heads, layout.head_dim)
    pools = []
    for _ in range(layout.num_layers):
        if not stacked:
            pools.append((torch.full(shape, fill), torch.full(shape, fill)))
        elif layout.stack_dim == 0:
            pools.append(torch.full((2, *shape), fill))
        else:
            pools.append(torch.full((shape[0], 2, *shape[1:]), fill))
    return pools


def kv_of(pool, layout):
    """(k_pool, v_pool) views of one layer's pool entry."""
    if not layout.kv_stacked:
        return pool
    return (pool[0], pool[1]) if layout.stack_dim == 0 else (pool[:, 0], pool[:, 1])


def scatter(cache, pools, table, layout):
    """Writes a transformers cache's blocks into paged pools (what an engine's prefill
    does)."""
    for (keys, values), pool in zip(pairs_of(cache), pools):
        k_pool, v_pool = kv_of(pool, layout)
        for block, page in enumerate(table):
            span = slice(block * BT, (block + 1) * BT)
            k_pool[page] = keys[0, :, span].permute(1, 0, 2)
            v_pool[page] = values[0, :, span].permute(1, 0, 2)


def gather(pools, table, blocks, layout):
    """A transformers cache from the first `blocks` blocks of a block table."""
    pairs = []
    for pool in pools:
        k_pool, v_pool = kv_of(pool, layout)
        idx = torch.tensor(table[:blocks])
        k = k_pool[idx].reshape(blocks * BT, layout.num_kv_heads, layout.head_dim).permute(1, 0, 2)
        v = v_pool[idx].reshape(blocks * BT, layout.num_kv_heads, layout.head_dim).permute(1, 0, 2)
        pairs.append((k.unsqueeze(0).contiguous(), v.unsqueeze(0).contiguous()))
    return cache_of(pairs)


@pytest.mark.parametrize(
    "stacked,stack_dim", [(False, 0), (True, 0), (True, 1)], ids=["apart", "stacked0", "stacked1"]
)
def test_paged_round_trip_through_block_tables(tmp_path, model, stacked, stack_dim):
    layout = layout_of(model, kind=kv.PAGED, kv_stacked=stacked, stack_dim=stack_dim)
    ids = prompt(4 * BT + 3)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    # The saving engine's table skips pool blocks (holes) and is not in order; the
    # restoring engine gets other blocks of its own pool.
    save_table = [7, 2, 11, 5]
    load_table = [3, 9, 0, 14]
    source = make_pools(layout, 16, stacked, float("nan"))
    scatter(original, source, save_table, layout)
    with shm_store(tmp_path) as store:
        cache = kv.KVCache(store, layout, MODEL)
        saved = cache.save(ids, source, block_table=save_table)
        assert saved.stored == 4
        target = make_pools(layout, 16, stacked, -7.0)
        restored = cache.restore_into(ids, target, load_table)
        assert (restored.tokens, restored.blocks) == (4 * BT, 4)
        for src, dst in zip(source, target):
            (sk, sv), (dk, dv) = kv_of(src, layout), kv_of(dst, layout)
            for s, d in zip(save_table, load_table):
                assert torch.equal(sk[s], dk[d]) and torch.equal(sv[s], dv[d])
            untouched = [b for b in range(16) if b not in load_table]
            assert bool((dk[untouched] == -7.0).all()) and bool((dv[untouched] == -7.0).all())
        # The pool's KV drives the model exactly as the original KV does.
        r = restored.tokens
        got = logits_after(model, ids, gather(target, load_table, 4, layout), r)
        want = logits_after(model, ids, cropped(original, r), r)
        assert torch.equal(got, want)
        # Only as many blocks as the table (and max_tokens) name are written.
        again = make_pools(layout, 16, stacked, -7.0)
        short = cache.restore_into(ids, again, [1, 4], max_tokens=10 * BT)
        assert short.tokens == 2 * BT
        assert bool((kv_of(again[0], layout)[0][3] == -7.0).all())


def test_bad_input_is_a_typed_error(tmp_path, model):
    ids = prompt(2 * BT)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    with shm_store(tmp_path) as store:
        layout = layout_of(model)
        cache = kv.KVCache(store, layout, MODEL)
        with pytest.raises(cascade.InvalidInputError):
            cache.save(ids, pairs_of(original)[:1])
        with pytest.raises(cascade.InvalidInputError):
            cache.save(ids, [(k.half(), v.half()) for k, v in pairs_of(original)])
        with pytest.raises(cascade.InvalidInputError):
            cache.save(prompt(3 * BT), original)  # noqa: F821 - more tokens than the KV holds
        paged = kv.KVCache(store, layout_of(model, kind=kv.PAGED), MODEL)
        pools = make_pools(paged.layout, 4, False, 0.0)
        with pytest.raises(cascade.InvalidInputError):
            paged.save(ids, pools, block_table=[0, 4])
        with pytest.raises(cascade.InvalidInputError):
            paged.save(ids, pools, block_table=[1, 1])
        with pytest.raises(cascade.InvalidInputError):
            paged.save(ids, pools)
        with pytest.raises(cascade.InvalidInputError):
            kv.KVLayout(2, 2, 16, 0)
        with pytest.raises(cascade.InvalidInputError):
            kv.KVLayout(2, 2, 16, 16, dtype="int7")
        assert store.get_stats()["blocks"] == 0


def test_import_cascade_does_not_import_torch():
    code = "import sys, cascade, cascade.kv; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_example_runs(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "kv_restore.py"
    if not example.exists():
        pytest.skip(f"{example} is not in this checkout (the test runs from the repository)")
    done = subprocess.run(
        [sys.executable, str(example), "--tiny", "--store-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "bit-identical: True" in done.stdout, done.stdout


class Recording:
    """A store that records the device ("cpu" or "cuda") of every batch KVCache hands it,
    and passes each call on."""

    def __init__(self, store, evict_before_read=()):
        self.store = store
        self.puts = []
        self.gets = []
        # Keys removed just before a get_batch that asks for them (evicted between the
        # lookup and the read).
        self.evict_before_read = set(evict_before_read)

    def put_batch(self, keys, blocks):
        self.puts.append((len(keys), blocks.device.type))
        return self.store.put_batch(keys, blocks)

    def get_batch(self, keys, outs):
        self.gets.append((len(keys), outs.device.type))
        for key in self.evict_before_read & set(keys):
            self.store.remove(key)
        return self.store.get_batch(keys, outs)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("read_threads", [1, 3])
def test_batches_of_a_long_prompt(tmp_path, model, monkeypatch, read_threads):
    """A prompt longer than one batch is gathered into one reused staging tensor, stored
    in several put_batch calls and read back in several get_batch calls (several at once
    with read_threads > 1); bytes and logits are those of one batch."""
    ids = prompt(7 * BT + 2)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    layout = layout_of(model)
    monkeypatch.setattr(kv, "_CHUNK_BYTES", 2 * layout.block_bytes)
    with shm_store(tmp_path) as store:
        recording = Recording(store)
        cache = kv.KVCache(recording, layout, MODEL, read_threads=read_threads)
        saved = cache.save(ids, original)
        assert (saved.stored, saved.skipped) == (7, 0)
        assert recording.puts == [(2, "cpu"), (2, "cpu"), (2, "cpu"), (1, "cpu")]
        for block in range(7):
            out = bytearray(layout.block_bytes)
            assert store.get(cache.keys(ids)[block], out) == (True, layout.block_bytes)
            assert bytes(out) == block_bytes_of(original, block, layout), block
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        assert (restored.tokens, restored.blocks, restored.cut) == (7 * BT, 7, None)
        assert sorted(recording.gets) == [(1, "cpu"), (2, "cpu"), (2, "cpu"), (2, "cpu")]
        check_restore_matches(model, ids, original, restored)
        # A save after the first three blocks starts its batches at block 3.
        recording.puts.clear()
        store.clear()
        cache.save(ids[:, : 3 * BT], cropped(original, 3 * BT))
        assert cache.save(ids, original).stored == 4
        assert recording.puts == [(2, "cpu"), (1, "cpu"), (2, "cpu"), (2, "cpu")]
        check_restore_matches(model, ids, original, cache.restore(ids, max_tokens=ids.shape[1] - 1))


@pytest.mark.parametrize("read_threads", [1, 3])
def test_corrupt_block_in_a_later_batch_ends_the_prefix(tmp_path, model, monkeypatch, read_threads):
    directory = tmp_path / "files"
    ids = prompt(7 * BT + 1)  # noqa: F821
    assert save_in_child(directory, ids.shape[1]) == 7
    _, original = prefill(model, ids)  # noqa: F821
    layout = layout_of(model)
    target = block_bytes_of(original, 5, layout)
    for segment in sorted(directory.glob("*.seg")):
        data = bytearray(segment.read_bytes())
        at = data.find(target)
        if at >= 0:
            data[at + 3] ^= 0x01
            segment.write_bytes(bytes(data))
            break
    else:
        pytest.fail("block 5's bytes were not found in the file tier's segments")
    monkeypatch.setattr(kv, "_CHUNK_BYTES", 2 * layout.block_bytes)
    with file_store(directory) as store:
        cache = kv.KVCache(store, layout, MODEL, read_threads=read_threads)
        restored = cache.restore(ids, max_tokens=ids.shape[1] - 1)
        # Blocks 0-3 fill the first two batches, block 4 is whole, block 5 is not.
        assert (restored.tokens, restored.blocks, restored.cut) == (5 * BT, 5, "corrupt")
        check_restore_matches(model, ids, original, restored)
        assert cache.lookup(ids) == 5 * BT


@pytest.mark.parametrize("read_threads", [1, 2])
def test_paged_restore_in_groups_through_a_reused_staging_tensor(tmp_path, model, monkeypatch, read_threads):
    """restore_into reads a group of read_threads batches into one staging tensor,
    scatters it, and reuses the tensor for the next group; a block evicted between the
    lookup and the read ends the prefix in a later group, pages after it untouched."""
    layout = layout_of(model, kind=kv.PAGED)
    ids = prompt(5 * BT + 3)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    monkeypatch.setattr(kv, "_CHUNK_BYTES", layout.block_bytes)  # one block a batch
    save_table, load_table = [4, 0, 3, 1, 2], [9, 2, 7, 5, 0]
    source = make_pools(layout, 10, False, float("nan"))
    scatter(original, source, save_table, layout)
    with shm_store(tmp_path) as store:
        cache = kv.KVCache(store, layout, MODEL)
        assert cache.save(ids, source, block_table=save_table).stored == 5
        recording = Recording(store)
        target = make_pools(layout, 10, False, -7.0)
        restored = kv.KVCache(recording, layout, MODEL, read_threads=read_threads).restore_into(ids, target, load_table)
        assert (restored.tokens, restored.blocks, restored.cut) == (5 * BT, 5, None)
        assert recording.gets == [(1, "cpu")] * 5
        for (sk, sv), (dk, dv) in zip(source, target):
            for s, d in zip(save_table, load_table):
                assert torch.equal(sk[s], dk[d]) and torch.equal(sv[s], dv[d])
        # Block 3 disappears after the lookup: blocks 0-2 land, 3 and 4 do not.
        evicting = Recording(store, evict_before_read=[cache.keys(ids)[3]])
        again = make_pools(layout, 10, False, -7.0)
        short = kv.KVCache(evicting, layout, MODEL, read_threads=read_threads).restore_into(ids, again, load_table)
        assert (short.tokens, short.blocks, short.cut) == (3 * BT, 3, "missing")
        for (sk, sv), (dk, dv) in zip(source, again):
            for s, d in zip(save_table[:3], load_table[:3]):
                assert torch.equal(sk[s], dk[d]) and torch.equal(sv[s], dv[d])
            for d in load_table[3:]:
                assert bool((dk[d] == -7.0).all()) and bool((dv[d] == -7.0).all())


def test_read_threads_must_be_a_positive_integer(tmp_path, model):
    with shm_store(tmp_path) as store:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(cascade.InvalidInputError):
                kv.KVCache(store, layout_of(model), MODEL, read_threads=bad)


# ----------------------------------------------------------------- on a GPU


def need_cuda():
    if not torch.cuda.is_available():
        skip_unless_present("gpu", "torch has no CUDA device here")
    if not gpu_available():
        skip_unless_present("gpu", "this build of cascade has no GPU support or finds no CUDA driver")


def cuda_store(tmp_path, kind):
    """A store of one kind a GPU's KV may go to: an shm tier alone, a file tier alone,
    or a GPU tier over shm."""
    if kind == "shm":
        return shm_store(tmp_path)
    if kind == "file":
        return file_store(tmp_path / "files")
    return cascade.CascadeStore(
        cascade.CascadeConfig(
            gpu_capacity_bytes=4 * MIB, gpu_required=True, shm_capacity_bytes=4 * MIB, shm_path=str(tmp_path / "pool.shm")
        )
    )


@pytest.mark.parametrize("read_threads", [1, 2])
@pytest.mark.parametrize("kind", ["shm", "file", "gpu"])
def test_cuda_kv_goes_to_every_store_as_cuda_tensors(tmp_path, model, monkeypatch, kind, read_threads):
    need_cuda()
    gpu_model = tiny_llama().cuda()  # noqa: F821
    ids = prompt(5 * BT + 3).cuda()  # noqa: F821
    _, original = prefill(gpu_model, ids)  # noqa: F821
    layout = layout_of(gpu_model)
    monkeypatch.setattr(kv, "_CHUNK_BYTES", 2 * layout.block_bytes)
    with cuda_store(tmp_path, kind) as store:
        assert store.tiers[0] == "gpu" if kind == "gpu" else len(store.tiers) == 1
        recording = Recording(store)
        # Batches of 2 blocks: groups of 2 or 4, so the two staging tensors take turns
        # (with one reader the first is refilled for the third group).
        cache = kv.KVCache(recording, layout, MODEL, read_threads=read_threads)
        assert cache.save(ids, original).stored == 5
        restored = cache.restore(ids, device="cuda", max_tokens=ids.shape[1] - 1)
        assert (restored.tokens, restored.cut) == (5 * BT, None)
        # Every batch crossed as CUDA memory: nothing was staged in host memory here.
        assert recording.puts and all(device == "cuda" for _, device in recording.puts)
        assert recording.gets and all(device == "cuda" for _, device in recording.gets)
        for (k, v), (ok, ov) in zip(pairs_of(restored.cache), pairs_of(original)):
            assert k.is_cuda and torch.equal(k, ok[:, :, : 5 * BT])
            assert v.is_cuda and torch.equal(v, ov[:, :, : 5 * BT])
        check_restore_matches(gpu_model, ids, original, restored)
        # The stored bytes are the block format, whichever device wrote them.
        host_original = cache_of([(k.cpu(), v.cpu()) for k, v in pairs_of(original)])
        for block in range(5):
            out = bytearray(layout.block_bytes)
            assert store.get(cache.keys(ids)[block], out) == (True, layout.block_bytes)
            assert bytes(out) == block_bytes_of(host_original, block, layout), block


def test_cuda_paged_pools_round_trip(tmp_path, model, monkeypatch):
    need_cuda()
    layout = layout_of(model, kind=kv.PAGED, kv_stacked=True, stack_dim=1)
    # One block a batch: four groups, scattered on the side stream while the next is read.
    monkeypatch.setattr(kv, "_CHUNK_BYTES", layout.block_bytes)
    ids = prompt(4 * BT + 3)  # noqa: F821
    _, original = prefill(model, ids)  # noqa: F821
    source = make_pools(layout, 16, True, float("nan"))
    scatter(original, source, [7, 2, 11, 5], layout)
    source = [pool.cuda() for pool in source]
    with shm_store(tmp_path) as store:
        recording = Recording(store)
        cache = kv.KVCache(recording, layout, MODEL)
        assert cache.save(ids, source, block_table=[7, 2, 11, 5]).stored == 4
        target = [pool.cuda() for pool in make_pools(layout, 16, True, -7.0)]
        restored = cache.restore_into(ids, target, [3, 9, 0, 14])
        assert (restored.tokens, restored.blocks) == (4 * BT, 4)
        assert all(device == "cuda" for _, device in recording.puts + recording.gets)
        for src, dst in zip(source, target):
            for s, d in zip([7, 2, 11, 5], [3, 9, 0, 14]):
                assert torch.equal(src[s], dst[d])
            untouched = [b for b in range(16) if b not in (3, 9, 0, 14)]
            assert bool((dst[untouched] == -7.0).all())
        got = logits_after(model, ids, gather([p.cpu() for p in target], [3, 9, 0, 14], 4, layout), 4 * BT)
        want = logits_after(model, ids, cropped(original, 4 * BT), 4 * BT)
        assert torch.equal(got, want)
