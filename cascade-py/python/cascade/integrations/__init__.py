"""Cascade as the KV store of inference engines.

Each engine loads third-party KV stores by module path; these modules are what it loads:

- ``cascade.integrations.vllm``: ``CascadeConnector``, a vLLM KV connector
  (``--kv-transfer-config '{"kv_connector": "CascadeConnector",
  "kv_connector_module_path": "cascade.integrations.vllm", ...}'``);
- ``cascade.integrations.sglang``: ``CascadeHiCacheStorage``, an SGLang HiCache storage
  backend (``--hicache-storage-backend dynamic``);
- ``cascade.integrations.lmcache``: ``CascadeBackend``, an LMCache storage plugin
  (``storage_plugins: [cascade]``).

Importing this package imports no engine: each module imports its engine when it is
imported, which only the engine itself does. docs/engines.md has each engine's command
line or YAML with a Cascade TOML beside it.

What every connector shares (``cascade.integrations.common``): the deployment comes from a
Cascade TOML file; engine keys become Cascade block ids inside a namespace (model, dtype,
layout, tensor-parallel shard, and the engine's cache salt or tenant), so two models or two
tenants never share a block; a read that finds a block missing, of the wrong size or
failing its checksum is a miss, never wrong KV.
"""

from .common import KeySpace, close_store, load_blocks, open_store

__all__ = ["KeySpace", "close_store", "load_blocks", "open_store"]
