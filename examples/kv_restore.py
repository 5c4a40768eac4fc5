"""Save a transformer's KV in Cascade, restore it for a second request, compare.

    pip install ./cascade-py torch transformers
    python examples/kv_restore.py                 # a small Llama, on the GPU when there is one
    python examples/kv_restore.py --tiny          # 2 layers, seconds on a CPU

A LlamaForCausalLM is built from a LlamaConfig with a fixed seed (random weights: nothing
is downloaded or fetched). Request 1 prefills a shared prefix plus its own question and
saves the prefix's KV; request 2 (the same prefix, another question) is answered twice:
by recomputing the whole prompt, and by restoring the prefix from Cascade and computing
only the rest. It prints whether request 2's logits after the restore are bit-identical
to the logits computed from request 1's original KV of the same prefix, and the time to
first token both ways.
"""

import argparse
import os
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import cascade
from cascade import kv


def build_model(tiny: bool, device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(0)
    if tiny:
        config = LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        )
    else:
        config = LlamaConfig(
            vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
            num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=8192,
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (fast on a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prefix-tokens", type=int, default=None, help="shared prefix length")
    parser.add_argument("--question-tokens", type=int, default=32)
    parser.add_argument("--block-tokens", type=int, default=16)
    parser.add_argument("--store-dir", default=None, help="where the shm pool and file tier live")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = build_model(args.tiny, device)
    prefix_len = args.prefix_tokens or (200 if args.tiny else 2000)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, vocab, (1, prefix_len), generator=g)
    first = torch.cat([prefix, torch.randint(0, vocab, (1, args.question_tokens), generator=g)], 1).to(device)
    second = torch.cat([prefix, torch.randint(0, vocab, (1, args.question_tokens), generator=g)], 1).to(device)

    directory = args.store_dir or tempfile.mkdtemp(prefix="cascade-kv-example-")
    os.makedirs(directory, exist_ok=True)
    config = cascade.CascadeConfig(
        shm_capacity_bytes=(64 << 20) if args.tiny else (1 << 30),
        shm_path=f"{directory}/pool.shm",
        lustre_path=f"{directory}/files",
    )
    layout = kv.KVLayout.from_config(model.config, args.block_tokens, dtype=model.dtype)
    with cascade.CascadeStore(config) as store:
        cache = kv.KVCache(store, layout, model="kv_restore example, LlamaConfig seed 0")

        # Request 1: prefill and save the KV of its full blocks.
        out = model(first, past_key_values=kv.dynamic_cache([], model.config), use_cache=True)
        original = out.past_key_values
        saved = cache.save(first, original)
        print(f"request 1: {first.shape[1]} tokens, saved {saved.stored} blocks ({saved.bytes_stored / 2**20:.1f} MiB)")

        model(second, past_key_values=kv.dynamic_cache([], model.config), use_cache=True)  # warm-up
        sync(device)

        # Request 2 recomputed in full.
        start = time.perf_counter()
        full = model(second, past_key_values=kv.dynamic_cache([], model.config), use_cache=True).logits[:, -1]
        sync(device)
        recompute_s = time.perf_counter() - start

        # Request 2 from the restored prefix.
        start = time.perf_counter()
        restored = cache.restore(second, device=device, max_tokens=second.shape[1] - 1, config=model.config)
        r = restored.tokens
        logits = model(second[:, r:], past_key_values=restored.cache, use_cache=True).logits
        sync(device)
        restore_s = time.perf_counter() - start

        # The same computation from request 1's original KV of those r tokens.
        pairs = [(k[:, :, :r].clone(), v[:, :, :r].clone()) for k, v in kv.cache_pairs(original)]
        reference = model(second[:, r:], past_key_values=kv.dynamic_cache(pairs), use_cache=True).logits

        identical = torch.equal(logits, reference)
        drift = (logits[:, -1].float() - full.float()).abs().max().item()
        print(f"request 2: {second.shape[1]} tokens, {r} restored from {', '.join(store.tiers)}")
        print(f"bit-identical: {identical} (logits after restore vs logits from the original KV)")
        print(f"max |difference| to the full recompute's last logits: {drift:.3g} (kernel shapes differ)")
        print(f"time to first token: recompute {recompute_s * 1e3:.1f} ms, restore {restore_s * 1e3:.1f} ms "
              f"({recompute_s / restore_s:.2f}x) on {device}")
        if not identical:
            raise SystemExit("restored KV gave different logits")


if __name__ == "__main__":
    main()
