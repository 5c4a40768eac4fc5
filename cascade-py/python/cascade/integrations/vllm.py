"""Cascade as a vLLM KV connector (vLLM 0.33 ``KVConnectorBase_V1``).

vLLM loads it with::

    vllm serve MODEL --kv-transfer-config '{"kv_connector": "CascadeConnector",
        "kv_connector_module_path": "cascade.integrations.vllm", "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"config": "/etc/cascade/vllm.toml"}}'

One Cascade block holds one vLLM KV block: every layer's K and V for its ``block_size``
tokens, layer after layer, each in the attention backend's logical order with the block
dimension taken out (``[2, block_size, kv_heads, head_size]`` for the flash-attention and
FlashInfer layouts, ``[block_size, head_size]`` for MLA). Blocks are named by vLLM's own
block hashes (which chain the token prefix, the request's ``cache_salt``, LoRA and
multimodal inputs) inside a namespace of the model, KV dtype, block size, layer shapes, the
tensor-parallel rank and the optional ``namespace`` salt.

Scheduler side: ``get_num_new_matched_tokens`` looks the request's block hashes up in one
``lookup_prefix`` call (never the whole prompt: vLLM computes at least its last token);
``update_state_after_alloc`` and ``build_connector_meta`` turn hits into loads and newly
computed full blocks into saves, per step. Worker side: ``start_load_kv`` reads every load
of the step in one batch into a staging tensor on the KV's device and scatters it into the
paged caches; ``wait_for_save`` gathers the step's new blocks from all layers and stores
them in one batch. With a GPU tier in the deployment the staging tensor stays on the GPU
and Cascade copies device to device; otherwise it is host memory. A block that fails to
load (missing, evicted since the lookup, corrupt) and every block after it in its request
are reported by ``get_block_ids_with_load_errors``, so vLLM recomputes them
(``kv_load_failure_policy: recompute``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

import cascade

from .common import (
    KeySpace,
    close_store,
    leading_hits,
    load_blocks,
    logger,
    open_store,
    save_blocks,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

#: Blocks moved per Cascade batch (bounds the staging tensor).
BATCH_BLOCKS = 256


@dataclass
class BlockTransfer:
    """Blocks of one request to move: vLLM block ids and the block hashes naming them."""

    req_id: str
    block_ids: list[int]
    block_hashes: list[bytes]


@dataclass
class CascadeConnectorMetadata(KVConnectorMetadata):
    """What the workers do in one step: loads before the forward, saves after it."""

    loads: list[BlockTransfer] = field(default_factory=list)
    saves: list[BlockTransfer] = field(default_factory=list)


@dataclass
class _RequestState:
    request: Any
    block_ids: list[int] = field(default_factory=list)
    #: Leading blocks known to be in Cascade (hit by the lookup, or saved).
    stored: int = 0
    #: Block range [start, end) to load at the request's next scheduling.
    load: Optional[tuple[int, int]] = None


def _tp(vllm_config: Any) -> tuple[int, int]:
    tp_size = int(vllm_config.parallel_config.tensor_parallel_size)
    try:
        from vllm.distributed.parallel_state import (
            get_tensor_model_parallel_rank,
            model_parallel_is_initialized,
        )

        if model_parallel_is_initialized():
            return get_tensor_model_parallel_rank(), tp_size
    except ImportError:
        pass
    return int(getattr(vllm_config.parallel_config, "rank", 0)) % tp_size, tp_size


class CascadeConnector(KVConnectorBase_V1):
    """vLLM's KV connector over a Cascade store (see the module docs).

    ``kv_connector_extra_config`` keys: ``config``, the Cascade TOML
    (``$CASCADE_CONFIG`` when absent; ``{rank}`` in it becomes the worker's
    tensor-parallel rank, the scheduler opens rank 0's); ``namespace``, a tenant salt.
    """

    def __init__(
        self,
        vllm_config: "VllmConfig",
        role: KVConnectorRole,
        kv_cache_config: "KVCacheConfig",
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        transfer = self._kv_transfer_config
        self._block_size = int(vllm_config.cache_config.block_size)
        self._model = str(vllm_config.model_config.model)
        self._salt = transfer.get_from_extra_config("namespace", None)
        tp_rank, self._tp_size = _tp(vllm_config)
        self._tp_rank = tp_rank if role == KVConnectorRole.WORKER else 0
        config = transfer.get_from_extra_config("config", None)
        # The scheduler refreshes its view at most this often, to see blocks that
        # workers in other processes stored in the shared tiers since it opened.
        # (0: before every lookup; negative: never).
        self._refresh_every = (
            float(transfer.get_from_extra_config("refresh_seconds", 1.0))
            if role == KVConnectorRole.SCHEDULER
            else -1.0
        )
        self._refreshed = time.monotonic()
        self._own_view = False
        try:
            self.store: cascade.CascadeStore = open_store(config, rank=self._tp_rank)
        except cascade.BusyError:
            if role != KVConnectorRole.SCHEDULER:
                raise
            # The workers run in other processes and worker 0 holds rank 0's shm pool:
            # the scheduler opens a view of its own ({rank} = "scheduler") and finds the
            # workers' blocks in the shared file tier.
            self.store = open_store(config, rank="scheduler")
            self._own_view = True
        groups = kv_cache_config.kv_cache_groups if kv_cache_config is not None else []
        if len(groups) > 1:
            raise ValueError(
                "the Cascade vLLM connector supports one KV cache group (full attention); "
                f"this model has {len(groups)}"
            )
        spec = groups[0].kv_cache_spec if groups else None
        self._num_blocks = int(getattr(kv_cache_config, "num_blocks", 0) or 0)
        self._num_layers = len(groups[0].layer_names) if groups else 0
        self._expected_block_shape = _block_shape(spec, self._block_size)
        # The scheduler and every worker derive the same namespace from the KV cache
        # config: what the workers store is what the scheduler looks up.
        self.keys = self._key_space(
            _layout_name(spec, self._expected_block_shape, self._num_layers, self._kv_dtype())
        )
        # Scheduler state.
        self._requests: dict[str, _RequestState] = {}
        # Worker state.
        self._layers: list[tuple[str, torch.Tensor, int]] = []
        self._load_errors: set[int] = set()
        self._device_io = False

    def _kv_dtype(self) -> str:
        dtype = str(self._vllm_config.cache_config.cache_dtype)
        if dtype == "auto":
            dtype = str(self._vllm_config.model_config.dtype)
        return dtype.removeprefix("torch.")

    def _key_space(self, layout: str) -> KeySpace:
        return KeySpace(
            "vllm", self._model, self._kv_dtype(), layout, self._tp_rank, self._tp_size, self._salt
        )

    # ==============================================================================
    # Scheduler side
    # ==============================================================================

    def get_num_new_matched_tokens(
        self, request: "Request", num_computed_tokens: int
    ) -> tuple[Optional[int], bool]:
        bs = self._block_size
        every = self._refresh_every
        if every >= 0 and time.monotonic() - self._refreshed >= every:
            try:
                self.store.refresh()
            except cascade.CascadeError as e:
                logger.warning("Cascade refresh failed: %s", e)
            self._refreshed = time.monotonic()
        # vLLM computes at least the prompt's last token: never offer the whole prompt.
        limit = min(len(request.block_hashes), (request.num_tokens - 1) // bs)
        hits = leading_hits(self.store, self.keys.block_ids(request.block_hashes[:limit]))
        state = self._requests.get(request.request_id)
        if state is None or state.request is not request:
            state = self._requests[request.request_id] = _RequestState(request)
        state.stored = hits
        external = hits * bs - num_computed_tokens
        if external <= 0:
            state.load = None
            return 0, False
        state.load = (num_computed_tokens // bs, hits)
        return external, False

    def update_state_after_alloc(
        self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int
    ) -> None:
        state = self._requests.get(request.request_id)
        if state is None:
            state = self._requests[request.request_id] = _RequestState(request)
        if num_external_tokens <= 0:
            state.load = None
        state.block_ids = list(blocks.get_block_ids()[0])

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        meta = CascadeConnectorMetadata()
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            state = self._requests.get(new.req_id)
            if state is None:
                continue
            state.block_ids = list(new.block_ids[0])
            self._plan(meta, new.req_id, state, new.num_computed_tokens + scheduled.get(new.req_id, 0))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self._requests.get(req_id)
            if state is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                state.block_ids = list(new_ids[0]) if new_ids is not None else []
            elif new_ids is not None:
                state.block_ids.extend(new_ids[0])
            self._plan(meta, req_id, state, cached.num_computed_tokens[i] + scheduled.get(req_id, 0))
        for req_id in scheduler_output.finished_req_ids:
            self._requests.pop(req_id, None)
        return meta

    def _plan(
        self, meta: CascadeConnectorMetadata, req_id: str, state: _RequestState, computed: int
    ) -> None:
        hashes = state.request.block_hashes
        if state.load is not None:
            start, end = state.load
            end = min(end, len(state.block_ids))
            if end > start:
                meta.loads.append(
                    BlockTransfer(req_id, state.block_ids[start:end], list(hashes[start:end]))
                )
            state.load = None
        # Full blocks computed once this step ran, whose hashes vLLM knows.
        full = min(computed // self._block_size, len(hashes), len(state.block_ids))
        if full > state.stored:
            meta.saves.append(
                BlockTransfer(
                    req_id, state.block_ids[state.stored : full], list(hashes[state.stored : full])
                )
            )
            state.stored = full

    def request_finished(
        self, request: "Request", block_ids: list[int]
    ) -> tuple[bool, Optional[dict[str, Any]]]:
        # Saves finish inside the step that computed the blocks: nothing holds them.
        self._requests.pop(request.request_id, None)
        return False, None

    # ==============================================================================
    # Worker side
    # ==============================================================================

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        layers = []
        for name, kv in kv_caches.items():
            layers.append((name, kv, _block_dim(kv, self._num_blocks)))
        if not layers:
            return
        first = layers[0][1]
        per_layer = [tuple(_without(kv.shape, dim)) for _, kv, dim in layers]
        # The scheduler names blocks from the KV cache spec alone: refuse a layout whose
        # blocks it would describe wrongly rather than store bytes another reader
        # would misread.
        expected = self._expected_block_shape
        if expected is not None and any(s != expected for s in per_layer):
            raise ValueError(
                f"the Cascade vLLM connector expects per-layer blocks of shape {expected}, "
                f"this attention backend has {sorted(set(per_layer))}"
            )
        if any(s != per_layer[0] for s in per_layer) or any(kv.dtype != first.dtype for _, kv, _ in layers):
            raise ValueError("the Cascade vLLM connector needs every layer's KV alike")
        if len(layers) != self._num_layers:
            raise ValueError(
                f"vLLM registered {len(layers)} KV caches, its KV cache config names {self._num_layers}"
            )
        self._layers = layers
        self._row_shape = (len(layers), *per_layer[0])
        self._dtype = first.dtype
        self._device = first.device
        self._device_io = first.is_cuda and _has_gpu_tier(self.store)

    def _staging(self, n: int) -> torch.Tensor:
        device = self._device if self._device_io else torch.device("cpu")
        pin = self._device.type == "cuda" and not self._device_io
        return torch.empty((n, *self._row_shape), dtype=self._dtype, device=device, pin_memory=pin)

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, CascadeConnectorMetadata) or not meta.loads or not self._layers:
            return
        for transfer in meta.loads:
            hits = self._load(transfer.block_ids, self.keys.block_ids(transfer.block_hashes))
            # A request's loaded prefix ends at its first failed block: report it and
            # every block after it, so that vLLM recomputes from there.
            if False in hits:
                self._load_errors.update(transfer.block_ids[hits.index(False) :])

    def _load(self, block_ids: list[int], ids: list[str]) -> list[bool]:
        hits: list[bool] = []
        for s in range(0, len(ids), BATCH_BLOCKS):
            part_ids, part_blocks = ids[s : s + BATCH_BLOCKS], block_ids[s : s + BATCH_BLOCKS]
            staging = self._staging(len(part_ids))
            ok = load_blocks(self.store, part_ids, staging)
            good = [b for b, h in zip(part_blocks, ok) if h]
            if good:
                rows = staging[[i for i, h in enumerate(ok) if h]] if not all(ok) else staging
                self._scatter(rows.to(self._device, non_blocking=True), good)
            hits += ok
        return hits

    def _scatter(self, rows: torch.Tensor, block_ids: list[int]) -> None:
        index = torch.tensor(block_ids, dtype=torch.long, device=self._device)
        for layer, (_, kv, dim) in enumerate(self._layers):
            kv.index_copy_(dim, index, rows[:, layer].movedim(0, dim))

    def _gather(self, block_ids: list[int]) -> torch.Tensor:
        index = torch.tensor(block_ids, dtype=torch.long, device=self._device)
        parts = [kv.index_select(dim, index).movedim(dim, 0) for _, kv, dim in self._layers]
        return torch.stack(parts, dim=1)

    def wait_for_layer_load(self, layer_name: str) -> None:
        # start_load_kv loads every layer before the forward starts.
        return None

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: "AttentionMetadata",
        **kwargs: Any,
    ) -> None:
        # One Cascade block holds every layer: blocks are gathered in wait_for_save,
        # once all layers of the step are computed.
        return None

    def wait_for_save(self) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, CascadeConnectorMetadata) or not meta.saves or not self._layers:
            return
        block_ids = [b for t in meta.saves for b in t.block_ids]
        ids = self.keys.block_ids(h for t in meta.saves for h in t.block_hashes)
        for s in range(0, len(ids), BATCH_BLOCKS):
            rows = self._gather(block_ids[s : s + BATCH_BLOCKS])
            if not self._device_io and rows.is_cuda:
                staging = self._staging(rows.shape[0])
                staging.copy_(rows)
                rows = staging
            save_blocks(self.store, ids[s : s + BATCH_BLOCKS], rows)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self) -> None:
        if not self.store.closed:
            close_store(self.store)


def _block_shape(spec: Any, block_size: int) -> Optional[tuple[int, ...]]:
    """One layer's part of a block, as the attention backends' logical KV shapes have
    it without the block dimension: [2, block_size, kv_heads, head_size] for full
    attention (flash-attention's [2, num_blocks, ...] and FlashInfer's
    [num_blocks, 2, ...] alike), [block_size, head_size] for MLA."""
    if spec is None:
        return None
    head = int(spec.head_size)
    if type(spec).__name__.startswith("MLA"):
        return (block_size, head)
    return (2, block_size, int(spec.num_kv_heads), head)


def _layout_name(
    spec: Any, block_shape: Optional[tuple[int, ...]], num_layers: int, dtype: str
) -> str:
    """The block format as the namespace records it. Full-attention blocks are
    cascade.kv's paged format (every layer's K then V, each ``[block_size, kv_heads,
    head_size]``), so they are named by its KVLayout; flash-attention and FlashInfer
    give the same bytes, both are named as the K/V-stacked layout."""
    if block_shape is not None and len(block_shape) == 4:
        try:
            from cascade.kv import KVLayout

            _, block_size, heads, head = block_shape
            return KVLayout.paged(
                num_layers, heads, head, block_size, dtype, kv_stacked=True, stack_dim=0
            ).describe()
        except (ImportError, cascade.CascadeError):
            pass  # a KV dtype cascade.kv does not name (fp8 caches): the plain name
    return (
        f"{type(spec).__name__};layers={num_layers};"
        f"block={'x'.join(map(str, block_shape or ()))}"
    )


def _block_dim(kv: torch.Tensor, num_blocks: int) -> int:
    """The dimension of a layer's KV that indexes vLLM blocks: 1 for flash-attention's
    [2, num_blocks, ...], 0 for FlashInfer's [num_blocks, 2, ...] and MLA's
    [num_blocks, ...]."""
    if kv.dim() >= 2 and kv.shape[0] == 2 and kv.shape[1] == num_blocks:
        return 1
    if kv.shape[0] == num_blocks:
        return 0
    raise ValueError(
        f"a KV cache of shape {tuple(kv.shape)} has no dimension of {num_blocks} blocks"
    )


def _without(shape: torch.Size, dim: int) -> list[int]:
    return [s for i, s in enumerate(shape) if i != dim]


def _has_gpu_tier(store: cascade.CascadeStore) -> bool:
    try:
        tiers = store.get_stats().get("tiers", [])
    except cascade.CascadeError:
        return False
    return any(isinstance(t, dict) and t.get("kind") == "gpu" for t in tiers)
