"""The Cascade connector driven by vLLM's own scheduler and config objects on CPU.

The scheduler side runs inside vLLM's real ``Scheduler`` (which loads the connector from
``kv_transfer_config`` by module path and calls get_num_new_matched_tokens,
update_state_after_alloc and build_connector_meta while scheduling real ``Request``s
hashed by vLLM's block hasher). The worker side is the connector vLLM's model runner would
create, given CPU tensors shaped like vLLM's paged KV ([2, num_blocks, block_size,
kv_heads, head_size] per layer, flash-attention's layout) and the metadata the scheduler
built."""

import json
from pathlib import Path

import pytest
import torch
from helpers import corrupt_block, write_toml
from vllm.config import (
    CacheConfig,
    DeviceConfig,
    KVTransferConfig,
    ModelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from cascade.integrations.vllm import CascadeConnector, CascadeConnectorMetadata

BLOCK = 16
LAYERS = ["model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn"]
HEADS, HEAD = 2, 64
NUM_BLOCKS = 64
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
    "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": HEADS,
    "num_hidden_layers": len(LAYERS), "vocab_size": 1000, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "head_dim": HEAD,
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two local model directories (a model config is all vLLM's ModelConfig reads)."""
    root = tmp_path_factory.mktemp("models")
    made = []
    for name in ("tiny-a", "tiny-b"):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(TINY_LLAMA))
        made.append(str(root / name))
    return made


def vllm_config(model_dir, toml, namespace=None):
    extra = {"config": str(toml)}
    if namespace is not None:
        extra["namespace"] = namespace
    config = VllmConfig(
        model_config=ModelConfig(model=model_dir, tokenizer=model_dir, skip_tokenizer_init=True,
                                 dtype="bfloat16", max_model_len=1024, seed=0),
        device_config=DeviceConfig(device="cpu"),
        cache_config=CacheConfig(block_size=BLOCK, enable_prefix_caching=False),
        scheduler_config=SchedulerConfig(max_num_batched_tokens=1024, max_num_seqs=8,
                                         max_model_len=1024, is_encoder_decoder=False),
        kv_transfer_config=KVTransferConfig(
            kv_connector="CascadeConnector", kv_connector_module_path="cascade.integrations.vllm",
            kv_role="kv_both", kv_load_failure_policy="recompute", kv_connector_extra_config=extra),
    )
    config.cache_config.num_gpu_blocks = NUM_BLOCKS  # what profiling the GPU would set
    return config


def kv_cache_config():
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=HEADS, head_size=HEAD, dtype=torch.bfloat16)
    return KVCacheConfig(num_blocks=NUM_BLOCKS, kv_cache_tensors=[],
                         kv_cache_groups=[KVCacheGroupSpec(list(LAYERS), spec)])


class Engine:
    """vLLM's scheduler plus one worker-side connector over CPU paged KV."""

    def __init__(self, config):
        self.config = config
        kcc = kv_cache_config()
        self.scheduler = Scheduler(vllm_config=config, kv_cache_config=kcc,
                                   structured_output_manager=StructuredOutputManager(config),
                                   block_size=BLOCK, log_stats=False)
        assert isinstance(self.scheduler.connector, CascadeConnector)
        hash_fn = get_hash_fn_by_name(config.cache_config.prefix_caching_hash_algo)
        init_none_hash(hash_fn)
        self.hasher = get_request_block_hasher(BLOCK, hash_fn)
        self.worker = CascadeConnector(config, KVConnectorRole.WORKER, kcc)
        self.kv = {name: torch.zeros((2, NUM_BLOCKS, BLOCK, HEADS, HEAD), dtype=torch.bfloat16)
                   for name in LAYERS}
        self.worker.register_kv_caches(self.kv)

    def request(self, req_id, tokens, cache_salt=None):
        return Request(req_id, tokens, SamplingParams(max_tokens=4), None,
                       block_hasher=self.hasher, cache_salt=cache_salt)

    def step(self, before_save=None):
        """One scheduler step and the worker's part of it; the scheduler output."""
        out = self.scheduler.schedule()
        meta = out.kv_connector_metadata
        assert isinstance(meta, CascadeConnectorMetadata)
        self.worker.bind_connector_metadata(meta)
        self.worker.start_load_kv(None)
        if before_save is not None:
            before_save(out)  # the forward pass: the model writes its KV
        self.worker.wait_for_save()
        self.worker.clear_connector_metadata()
        return out

    def block_ids(self, out, req_id):
        for new in out.scheduled_new_reqs:
            if new.req_id == req_id:
                return new.block_ids[0]
        raise KeyError(req_id)

    def fill(self, block_ids, seed):
        gen = torch.Generator().manual_seed(seed)
        for kv in self.kv.values():
            raw = kv.view(torch.int16)
            for b in block_ids:
                raw[:, b].copy_(torch.randint(-(2**15), 2**15, raw[:, b].shape,
                                              dtype=torch.int16, generator=gen))

    def blocks(self, block_ids):
        return [torch.stack([kv[:, b] for kv in self.kv.values()]).clone() for b in block_ids]

    def close(self):
        self.worker.shutdown()
        self.scheduler.connector.shutdown()


def tokens(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 999, (n,), generator=gen).tolist()


def save_prompt(config, prompt, req_id="first", seed=1, cache_salt=None):
    """Runs a prefill of `prompt` through an engine; the KV of its full blocks."""
    engine = Engine(config)
    try:
        engine.scheduler.add_request(engine.request(req_id, prompt, cache_salt))
        saved = {}

        def forward(out):
            ids = engine.block_ids(out, req_id)
            engine.fill(ids, seed)
            saved["blocks"] = engine.blocks(ids[: len(prompt) // BLOCK])

        out = engine.step(forward)
        meta_saves = [t for t in out.kv_connector_metadata.saves if t.req_id == req_id]
        assert sum(len(t.block_ids) for t in meta_saves) == len(prompt) // BLOCK
        return saved["blocks"]
    finally:
        engine.close()


def load_prompt(config, prompt, req_id="second", cache_salt=None, before_load=None):
    """Schedules `prompt` on a fresh engine; (scheduler output, loaded blocks, errors)."""
    engine = Engine(config)
    try:
        engine.scheduler.add_request(engine.request(req_id, prompt, cache_salt))
        if before_load is not None:
            before_load(engine)
        out = engine.step()
        loads = [t for t in out.kv_connector_metadata.loads if t.req_id == req_id]
        ids = [b for t in loads for b in t.block_ids]
        return out, engine.blocks(ids), engine.worker.get_block_ids_with_load_errors(), ids
    finally:
        engine.close()


def test_vllm_loads_the_connector_by_module_path(tmp_path, model_dirs):
    engine = Engine(vllm_config(model_dirs[0], write_toml(tmp_path)))
    try:
        assert engine.scheduler.connector.store.tiers == ["shm", "file"]
        assert engine.worker._layers and engine.worker._row_shape == (2, 2, BLOCK, HEADS, HEAD)
    finally:
        engine.close()


def test_a_saved_prefix_is_loaded_into_another_engines_pages(tmp_path, model_dirs):
    config = vllm_config(model_dirs[0], write_toml(tmp_path, shm=False))
    prompt = tokens(5 * BLOCK + 3)
    saved = save_prompt(config, prompt)
    out, loaded, errors, ids = load_prompt(config, prompt)
    # The scheduler counted 5 blocks as external hits: the request starts at 80 tokens.
    new = out.scheduled_new_reqs[0]
    assert out.num_scheduled_tokens["second"] == len(prompt) - 5 * BLOCK
    assert new.num_computed_tokens == 5 * BLOCK
    assert errors == set() and len(ids) == 5
    assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(saved, loaded))


def test_the_whole_prompt_is_never_a_hit(tmp_path, model_dirs):
    config = vllm_config(model_dirs[0], write_toml(tmp_path, shm=False))
    prompt = tokens(4 * BLOCK)  # exactly 4 blocks: vLLM must compute the last token
    save_prompt(config, prompt)
    out, _, errors, ids = load_prompt(config, prompt)
    assert len(ids) == 3 and errors == set()
    assert out.num_scheduled_tokens["second"] == BLOCK


def test_a_prompt_never_stored_is_a_miss(tmp_path, model_dirs):
    config = vllm_config(model_dirs[0], write_toml(tmp_path))
    save_prompt(config, tokens(3 * BLOCK + 1, seed=1))
    out, _, errors, ids = load_prompt(config, tokens(3 * BLOCK + 1, seed=2))
    assert ids == [] and errors == set()
    assert out.num_scheduled_tokens["second"] == 3 * BLOCK + 1


def test_a_corrupt_block_is_reported_for_recompute(tmp_path, model_dirs):
    toml = write_toml(tmp_path, shm=False)
    config = vllm_config(model_dirs[0], toml)
    prompt = tokens(5 * BLOCK + 1)
    saved = save_prompt(config, prompt)
    victim = saved[2].contiguous().view(torch.uint8).numpy().tobytes()
    assert corrupt_block(tmp_path / "files", victim) == 1
    out, loaded, errors, ids = load_prompt(config, prompt)
    assert len(ids) == 5  # the lookup does not read blocks: all 5 were planned
    assert errors == set(ids[2:])  # the corrupt block and every block after it
    assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in zip(saved[:2], loaded[:2]))


def test_a_block_evicted_after_the_lookup_is_reported(tmp_path, model_dirs):
    config = vllm_config(model_dirs[0], write_toml(tmp_path))
    prompt = tokens(4 * BLOCK + 1)
    save_prompt(config, prompt)

    engine = Engine(config)
    try:
        req = engine.request("second", prompt)
        engine.scheduler.add_request(req)
        out = engine.scheduler.schedule()
        meta = out.kv_connector_metadata
        loads = [b for t in meta.loads for b in t.block_ids]
        assert len(loads) == 4
        # Between the scheduler's lookup and the worker's load the block is dropped (by
        # another process, or evicted): the worker reports it instead of loading stale
        # pages.
        engine.worker.store.remove(engine.worker.keys.block_id(req.block_hashes[1]))
        engine.worker.bind_connector_metadata(meta)
        engine.worker.start_load_kv(None)
        assert engine.worker.get_block_ids_with_load_errors() == set(loads[1:])
        assert engine.worker.get_block_ids_with_load_errors() == set()  # reported once
    finally:
        engine.close()


def test_tenants_salts_and_models_never_share_blocks(tmp_path, model_dirs):
    toml = write_toml(tmp_path, shm=False)
    prompt = tokens(3 * BLOCK + 1)
    save_prompt(vllm_config(model_dirs[0], toml, namespace="tenant-a"), prompt)
    for config, salt in [
        (vllm_config(model_dirs[0], toml, namespace="tenant-b"), None),  # another tenant
        (vllm_config(model_dirs[1], toml, namespace="tenant-a"), None),  # another model
        (vllm_config(model_dirs[0], toml, namespace="tenant-a"), "salt"),  # vLLM's cache_salt
    ]:
        _, _, errors, ids = load_prompt(config, prompt, cache_salt=salt)
        assert ids == [] and errors == set()
    _, _, errors, ids = load_prompt(vllm_config(model_dirs[0], toml, namespace="tenant-a"), prompt)
    assert len(ids) == 3 and errors == set()


def test_chunked_prefill_saves_each_chunk_once(tmp_path, model_dirs):
    config = vllm_config(model_dirs[0], write_toml(tmp_path))
    config.scheduler_config.max_num_batched_tokens = 2 * BLOCK
    config.scheduler_config.enable_chunked_prefill = True
    engine = Engine(config)
    try:
        engine.scheduler.add_request(engine.request("long", tokens(5 * BLOCK + 2)))
        saved = []
        for _ in range(3):
            out = engine.step()
            saved += [b for t in out.kv_connector_metadata.saves for b in t.block_ids]
            engine.scheduler.update_from_output(out, _runner_output(out))
        assert len(saved) == len(set(saved)) == 5
    finally:
        engine.close()


def _runner_output(out):
    from vllm.v1.outputs import ModelRunnerOutput

    req_ids = list(out.num_scheduled_tokens)
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={r: i for i, r in enumerate(req_ids)},
        sampled_token_ids=[[] for _ in req_ids],
    )


def test_a_scheduler_in_another_process_than_its_workers_sees_their_blocks(tmp_path, model_dirs):
    """With several GPUs vLLM's workers are other processes: the scheduler finds the
    blocks they store after it opened in the shared file tier, by refreshing its view."""
    import subprocess
    import sys
    import textwrap

    # Per-process memory over a shared file tier, written through: what a deployment of
    # several vLLM worker processes uses so that the scheduler sees their blocks.
    toml = tmp_path / "cascade.toml"
    toml.write_text(
        'write_policy = "write_through"\n'
        '[[tiers]]\nkind = "memory"\nname = "memory"\ncapacity = "64 MiB"\n'
        f'[[tiers]]\nkind = "file"\nname = "file"\npath = "{tmp_path}/files"\n'
    )
    config = vllm_config(model_dirs[0], toml)
    config.kv_transfer_config.kv_connector_extra_config["refresh_seconds"] = 0
    scheduler = Scheduler(vllm_config=config, kv_cache_config=kv_cache_config(),
                          structured_output_manager=StructuredOutputManager(config),
                          block_size=BLOCK, log_stats=False)
    prompt = tokens(3 * BLOCK + 1)
    here = Path(__file__).resolve().parent
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]
            from test_support import worker_saves
            engine = worker_saves({str(model_dirs[0])!r}, {str(toml)!r}, {prompt!r})
            print("ready", flush=True)
            time.sleep(300)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "ready"
        hash_fn = get_hash_fn_by_name(config.cache_config.prefix_caching_hash_algo)
        init_none_hash(hash_fn)
        hasher = get_request_block_hasher(BLOCK, hash_fn)
        scheduler.add_request(Request("r", prompt, SamplingParams(max_tokens=4), None,
                                      block_hasher=hasher))
        out = scheduler.schedule()
        assert out.scheduled_new_reqs[0].num_computed_tokens == 3 * BLOCK
        assert len(out.kv_connector_metadata.loads[0].block_ids) == 3
    finally:
        worker.kill()
        worker.wait()
        scheduler.connector.shutdown()


def test_a_scheduler_whose_shm_pool_is_held_by_a_worker_opens_its_own_view(tmp_path, model_dirs):
    import cascade

    toml = write_toml(tmp_path)
    # Worker 0 of another process holds rank 0's pool.
    holder = cascade.CascadeStore.from_toml_str(toml.read_text().replace("{rank}", "0"))
    try:
        config = vllm_config(model_dirs[0], toml)
        scheduler = Scheduler(vllm_config=config, kv_cache_config=kv_cache_config(),
                              structured_output_manager=StructuredOutputManager(config),
                              block_size=BLOCK, log_stats=False)
        try:
            assert scheduler.connector._own_view
            assert (tmp_path / "pool-scheduler.shm").exists()
        finally:
            scheduler.connector.shutdown()
    finally:
        holder.close()
