"""Run in a subprocess by the tests: a vLLM worker that saves a prompt's blocks."""

import torch
from test_vllm_connector import BLOCK, Engine, vllm_config


def worker_saves(model_dir, toml, prompt):
    config = vllm_config(model_dir, toml)
    engine = Engine(config)
    engine.scheduler.add_request(engine.request("w", prompt))
    engine.step(lambda out: engine.fill(engine.block_ids(out, "w"), 3))
    engine.worker.store.flush()
    # Keep the worker's store (and its shm pool) open: the caller kills this process.
    return engine
