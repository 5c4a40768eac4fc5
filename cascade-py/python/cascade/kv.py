"""KV caches of real models in Cascade: save a prompt's KV, restore its longest cached prefix.

Engines think in tokens, layers, heads and paged blocks; a Cascade store thinks in block
ids and bytes. This module is the bridge:

- :class:`KVLayout` says how an engine holds KV: per-layer contiguous tensors
  ``[batch, kv_heads, tokens, head_dim]`` (Hugging Face transformers), or paged pools per
  layer ``[num_blocks, block_tokens, kv_heads, head_dim]`` with K and V apart or stacked
  (vLLM- and SGLang-style), addressed through a block table.
- :class:`KVCache` keys each full block of ``block_tokens`` tokens by its token prefix
  (:func:`cascade.prefix_keys`) under a namespace made of the model name, dtype, layout and
  an optional salt, so a different model, dtype, layout or tenant never hits another's
  blocks. One Cascade block holds all layers' K and V for its tokens.
- :meth:`KVCache.save` stores the blocks a prompt does not have stored yet (one lookup,
  then batches); :meth:`KVCache.restore` reads the longest stored prefix in batches and
  returns a transformers ``DynamicCache``; :meth:`KVCache.restore_into` scatters it into
  an engine's paged pool instead. A block that is missing or fails its checksum ends the
  restored prefix: the caller recomputes the rest and never gets wrong KV.
- KV on a GPU moves between the model's device and the store without passing through
  host memory here: blocks are gathered on the GPU and handed to the store as CUDA
  tensors, which every store takes (device to device into a GPU tier, by DMA into a host
  tier's registered memory), and read back the same way.

Every block has the same byte format whatever the engine's layout::

    block = [layer 0: K, V] [layer 1: K, V] ... [layer L-1: K, V]
    K, V  = [block_tokens, kv_heads, head_dim] in the model dtype, C order

torch is imported when a method needs it, so ``import cascade`` never needs torch.
docs/kv.md draws the layouts and shows how an engine uses this module.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ._native import (
    CascadeError,
    CascadeStore,
    CorruptError,
    InvalidInputError,
    UnavailableError,
    UnsupportedError,
    prefix_keys,
    prefix_namespace,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["KVLayout", "KVCache", "SaveResult", "Restored", "CONTIGUOUS", "PAGED", "cache_pairs", "dynamic_cache"]

#: Per-layer tensors ``[batch, kv_heads, tokens, head_dim]`` (transformers' DynamicCache).
CONTIGUOUS = "contiguous"
#: Per-layer pools ``[num_blocks, block_tokens, kv_heads, head_dim]`` and a block table.
PAGED = "paged"

# Names of the dtypes a layout may use, as torch and the namespace spell them.
_DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")
_ELEMENT_SIZE = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}

# Blocks go to and from the store in batches of about this many bytes: a save gathers one
# batch at a time into a staging tensor on the KV's device (so it needs this much spare
# memory there, not the whole prompt's), and a restore with read_threads > 1 reads that
# many batches at once.
_CHUNK_BYTES = 256 << 20

# What a store raises for CUDA memory it cannot take: a build without GPU support
# (Unsupported) or a machine where no CUDA driver loads (Unavailable).
_NO_DEVICE_IO = (UnavailableError, UnsupportedError)


def _invalid(message: str, **context: Any) -> InvalidInputError:
    error = InvalidInputError(message)
    error.kind = "invalid_input"
    error.context = {k: str(v) for k, v in context.items()}
    return error


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        error = UnsupportedError(
            "cascade.kv needs PyTorch for tensors (pip install torch); the rest of "
            "cascade works without it"
        )
        error.kind = "unsupported"
        error.context = {}
        raise error from e
    return torch


def _dtype_name(dtype: Any) -> str:
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch.") :]
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32", "fp32": "float32"}
    name = aliases.get(name, name)
    if name not in _DTYPES:
        raise _invalid(f"unsupported KV dtype {dtype!r}; one of {', '.join(_DTYPES)}", dtype=dtype)
    return name


@dataclass(frozen=True)
class KVLayout:
    """How an engine holds a model's KV, and how big one Cascade block is.

    ``kind`` is :data:`CONTIGUOUS` (per-layer ``[batch, kv_heads, tokens, head_dim]``
    tensors, as transformers keeps them) or :data:`PAGED` (per-layer pools
    ``[num_blocks, block_tokens, kv_heads, head_dim]``). A paged layout keeps K and V in
    two pools per layer (``kv_stacked=False``: a ``(k_pool, v_pool)`` pair per layer) or in
    one tensor per layer with K and V stacked along ``stack_dim`` (0: ``[2, num_blocks,
    ...]`` as vLLM's flash-attention backend; 1: ``[num_blocks, 2, ...]`` as its FlashInfer
    backend).
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_tokens: int
    dtype: str = "bfloat16"
    kind: str = CONTIGUOUS
    kv_stacked: bool = False
    stack_dim: int = 0

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim", "block_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _invalid(f"KVLayout.{name} must be a positive integer, got {value!r}", field=name)
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if self.kind not in (CONTIGUOUS, PAGED):
            raise _invalid(f"KVLayout.kind must be {CONTIGUOUS!r} or {PAGED!r}, got {self.kind!r}")
        if self.kind == CONTIGUOUS and self.kv_stacked:
            raise _invalid("kv_stacked applies to paged layouts only")
        if self.stack_dim not in (0, 1):
            raise _invalid(f"KVLayout.stack_dim must be 0 or 1, got {self.stack_dim!r}")

    @classmethod
    def contiguous(cls, num_layers: int, num_kv_heads: int, head_dim: int, block_tokens: int, dtype: Any = "bfloat16") -> "KVLayout":
        """Per-layer ``[batch, kv_heads, tokens, head_dim]`` tensors (transformers)."""
        return cls(num_layers, num_kv_heads, head_dim, block_tokens, dtype, CONTIGUOUS)

    @classmethod
    def paged(
        cls,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        block_tokens: int,
        dtype: Any = "bfloat16",
        *,
        kv_stacked: bool = False,
        stack_dim: int = 0,
    ) -> "KVLayout":
        """Per-layer pools ``[num_blocks, block_tokens, kv_heads, head_dim]``."""
        return cls(num_layers, num_kv_heads, head_dim, block_tokens, dtype, PAGED, kv_stacked, stack_dim)

    @classmethod
    def from_config(cls, config: Any, block_tokens: int, dtype: Any = None, kind: str = CONTIGUOUS, **paged: Any) -> "KVLayout":
        """The layout of a transformers model config (``num_hidden_layers``,
        ``num_key_value_heads``, ``head_dim`` or ``hidden_size / num_attention_heads``);
        ``dtype`` defaults to the config's ``torch_dtype`` / ``dtype``."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = getattr(text, "num_attention_heads")
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        if dtype is None:
            dtype = getattr(text, "dtype", None) or getattr(text, "torch_dtype", None) or "float32"
        return cls(text.num_hidden_layers, kv_heads, head_dim, block_tokens, dtype, kind, **paged)

    @property
    def element_size(self) -> int:
        """Bytes per element of the dtype."""
        return _ELEMENT_SIZE[self.dtype]

    @property
    def page_bytes(self) -> int:
        """Bytes of K (or V) of one layer for one block: ``block_tokens * kv_heads * head_dim``."""
        return self.block_tokens * self.num_kv_heads * self.head_dim * self.element_size

    @property
    def block_bytes(self) -> int:
        """Bytes of one Cascade block: all layers' K and V for ``block_tokens`` tokens."""
        return 2 * self.num_layers * self.page_bytes

    def describe(self) -> str:
        """The layout as the namespace records it (engine layout and block format)."""
        engine = self.kind
        if self.kind == PAGED:
            engine += f"/stacked{self.stack_dim}" if self.kv_stacked else "/apart"
        return (
            f"{engine};block=LKTHD;layers={self.num_layers};kv_heads={self.num_kv_heads};"
            f"head_dim={self.head_dim};block_tokens={self.block_tokens}"
        )

    def torch_dtype(self):
        """The dtype as a ``torch.dtype``."""
        return getattr(_torch(), self.dtype)


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`KVCache.save` did."""

    #: Full blocks of the prompt (its trailing partial block is never stored).
    blocks: int
    #: Blocks written by this call.
    stored: int
    #: Blocks found stored already (the leading run found by one lookup), not copied.
    skipped: int
    #: Bytes written by this call.
    bytes_stored: int


@dataclass
class Restored:
    """What :meth:`KVCache.restore` found: ``tokens`` leading tokens are covered by
    ``cache`` (None when nothing was restored); the caller runs the model on the rest."""

    tokens: int
    blocks: int
    cache: Any = None
    #: Why the prefix ended before the stored chain did ("corrupt", "missing"), or None.
    cut: Optional[str] = None


class KVCache:
    """Saves and restores one model's KV in a :class:`cascade.CascadeStore`.

    ``model`` names the weights (a hub id, a path, a hash of the weights); together with
    the layout's dtype and shape, ``salt`` (a tenant, an adapter, an engine version) and the
    tensor-parallel shard it makes the namespace of every key.

    KV on a GPU never passes through host memory here: a save gathers each batch of
    blocks into a staging tensor on the KV's device and hands it to the store, a restore
    reads the blocks into a tensor on the target device; the store copies device to device
    into and out of a GPU tier, and by DMA straight into and out of a host tier's memory
    (the shm pool is registered with CUDA; the file tier stages through pinned memory of
    its own). Only a build without GPU support, a machine where no CUDA driver loads, or
    KV on another GPU than the store's (a store without a GPU tier takes device 0's
    memory) makes these copies go through host memory. ``read_threads`` batches of about
    256 MiB are read at once (one at a time by default).

    A KVCache holds no buffers between calls; threads may share one, and the store.
    """

    def __init__(
        self,
        store: CascadeStore,
        layout: KVLayout,
        model: str,
        *,
        salt: Union[bytes, str, None] = None,
        tp_rank: int = 0,
        tp_size: int = 1,
        read_threads: int = 1,
    ) -> None:
        if not isinstance(layout, KVLayout):
            raise _invalid("layout must be a cascade.kv.KVLayout")
        if not model:
            raise _invalid("model must name the model (its weights decide the KV)")
        if not isinstance(read_threads, int) or isinstance(read_threads, bool) or read_threads < 1:
            raise _invalid(f"read_threads must be a positive integer, got {read_threads!r}")
        self.store = store
        self.layout = layout
        #: Batches of about 256 MiB read at once by a restore.
        self.read_threads = read_threads
        self.model = model
        self.namespace = prefix_namespace(
            model, dtype=layout.dtype, layout=layout.describe(), tp_rank=tp_rank, tp_size=tp_size, salt=salt
        )
        self._gpu_tier: Optional[bool] = None
        # False once the store refused CUDA memory (no GPU support in the build, no
        # driver): later calls go through host memory without asking again.
        self._device_io = True

    # ----------------------------------------------------------------- keys and lookups

    def keys(self, tokens: Sequence[int]) -> list[str]:
        """The key of each full block of ``tokens``."""
        return prefix_keys(_token_list(tokens), self.layout.block_tokens, self.namespace)

    def lookup(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of ``tokens`` have their KV stored (a multiple of
        ``block_tokens``)."""
        return self.store.lookup_prefix(self.keys(tokens)) * self.layout.block_tokens

    # ------------------------------------------------------------------------- save

    def save(
        self,
        tokens: Sequence[int],
        kv: Any,
        *,
        block_table: Optional[Sequence[int]] = None,
        batch_index: int = 0,
    ) -> SaveResult:
        """Stores the KV of every full block of ``tokens`` that is not stored yet.

        ``kv`` is, for a contiguous layout, a transformers cache (``DynamicCache`` of 5.x
        or 4.x) or a sequence of ``(key, value)`` per layer, each ``[batch, kv_heads,
        tokens, head_dim]`` holding at least the full blocks' tokens (``batch_index`` picks
        the sequence); for a paged layout, the per-layer pools, with ``block_table``
        giving the pool block of each of the sequence's blocks. Tensors may be on a GPU
        or on the CPU. One lookup finds the leading blocks already stored; the others
        are gathered on the KV's device and stored in batches of about 256 MiB (one
        ``put_batch`` each).
        """
        torch = _torch()
        layout = self.layout
        keys = self.keys(tokens)
        total = len(keys)
        if total == 0:
            return SaveResult(0, 0, 0, 0)
        if layout.kind == CONTIGUOUS:
            layers = _layers_of(kv, layout)
            _check_contiguous(layers, layout, total * layout.block_tokens, batch_index)
            table = None
        else:
            layers = _pools_of(kv, layout)
            table = _block_table(block_table, total, _pool_blocks(layers, layout), "block_table")
        device = layers[0][0].device
        skipped = self.store.lookup_prefix(keys)
        count = total - skipped
        if count == 0:
            return SaveResult(total, 0, skipped, 0)
        per_batch = _blocks_per_batch(layout)
        # One staging tensor, refilled for each batch: put_batch has copied a batch out of
        # it by the time it returns.
        staging = torch.empty(
            (min(count, per_batch), layout.num_layers, 2, layout.block_tokens, layout.num_kv_heads, layout.head_dim),
            dtype=layout.torch_dtype(),
            device=device,
        )
        stored = 0
        for start in range(skipped, total, per_batch):
            end = min(total, start + per_batch)
            part = staging[: end - start]
            _gather(part, layers, layout, start, end, batch_index, table, device)
            rows = part.view(torch.uint8).reshape(end - start, layout.block_bytes)
            stored += self._put_rows(keys[start:end], rows)
        return SaveResult(total, stored, skipped, count * layout.block_bytes)

    # ---------------------------------------------------------------------- restore

    def restore(
        self,
        tokens: Sequence[int],
        *,
        device: Any = None,
        max_tokens: Optional[int] = None,
        config: Any = None,
    ) -> Restored:
        """Restores the longest stored prefix of ``tokens`` as a transformers
        ``DynamicCache`` (batch 1) on ``device`` (default: the CPU).

        At most ``max_tokens`` tokens are restored (pass ``len(tokens) - 1`` when every
        block may be stored, so the model still has a token to compute logits for); the
        last block read is cut to that length. ``config`` (the model's config) lets a
        transformers 5.x cache pick each layer's kind. A block that is missing or fails
        its checksum ends the prefix there. The blocks pass through a staging tensor of
        ``read_threads`` batches of about 256 MiB on ``device``, each group permuted into
        the cache's tensors (on a GPU, while the next is read: two staging tensors).
        """
        torch = _torch()
        layout = self.layout
        if layout.kind != CONTIGUOUS:
            raise _invalid("restore builds a contiguous cache; use restore_into for a paged layout")
        device = torch.device(device if device is not None else "cpu")
        keys = self._stored_run(tokens, max_tokens)
        if not keys:
            return Restored(0, 0, None, None)
        bt = layout.block_tokens
        # Every layer's K and V, tokens in order: [L, 2, heads, tokens, dim].
        tokens_first = torch.empty(
            (layout.num_layers, 2, layout.num_kv_heads, len(keys) * bt, layout.head_dim),
            dtype=layout.torch_dtype(),
            device=device,
        )
        done, cut = self._read_groups(keys, device, lambda start, rows: _permute_into(tokens_first, rows, start, layout))
        if done == 0:
            return Restored(0, 0, None, cut)
        covered = done * bt if max_tokens is None else min(done * bt, max_tokens)
        pairs = []
        for index in range(layout.num_layers):
            k = tokens_first[index, 0, :, :covered].unsqueeze(0)
            v = tokens_first[index, 1, :, :covered].unsqueeze(0)
            if covered < len(keys) * bt:
                k, v = k.contiguous(), v.contiguous()
            pairs.append((k, v))
        return Restored(covered, done, dynamic_cache(pairs, config), cut)

    def restore_into(
        self,
        tokens: Sequence[int],
        kv: Any,
        block_table: Sequence[int],
        *,
        max_tokens: Optional[int] = None,
    ) -> Restored:
        """Restores the longest stored prefix of ``tokens`` into a paged pool: block
        ``i`` of the sequence goes to pool block ``block_table[i]`` of every layer.

        Returns the tokens covered (whole blocks; ``max_tokens`` rounds down to one).
        Pool blocks the table does not name are left as they are. The blocks pass
        through a staging tensor on the pool's device of ``read_threads`` batches of about
        256 MiB, reused for each group of batches (two that take turns on a GPU, so one
        group's scatter overlaps the next one's read), so a restore needs that much spare
        memory there, not the prefix's whole KV.
        """
        layout = self.layout
        if layout.kind != PAGED:
            raise _invalid("restore_into scatters into a paged layout; use restore for a contiguous one")
        layers = _pools_of(kv, layout)
        device = layers[0][0].device
        limit = len(_token_list(tokens)) if max_tokens is None else max_tokens
        wanted = min(limit // layout.block_tokens, len(block_table))
        table = _block_table(block_table, wanted, _pool_blocks(layers, layout), "block_table")
        keys = self._stored_run(tokens, wanted * layout.block_tokens)
        if not keys:
            return Restored(0, 0, None, None)
        done, cut = self._read_groups(
            keys, device, lambda start, rows: _scatter(rows, layers, layout, table[start : start + len(rows)], device)
        )
        return Restored(done * layout.block_tokens, done, None, cut)

    # ------------------------------------------------------------------ internals

    def _has_gpu_tier(self) -> bool:
        if self._gpu_tier is None:
            tiers = self.store.get_stats().get("tiers", [])
            self._gpu_tier = any(t.get("kind") == "gpu" for t in tiers)
        return self._gpu_tier

    def _device_io_on(self, device) -> bool:
        """Whether the store is handed memory on ``device`` itself (always for host
        memory). A store without a GPU tier takes device 0's memory; a GPU tier is
        assumed to be on the model's device (the store does not say which it is on)."""
        if device.type != "cuda":
            return True
        if not self._device_io:
            return False
        return self._has_gpu_tier() or (device.index or 0) == 0

    def _put_rows(self, keys: list[str], rows) -> int:
        """``put_batch`` of ``rows`` (one block a row), straight from the device they are
        on where the store can take it, else through host memory."""
        if self._device_io_on(rows.device):
            try:
                return self.store.put_batch(keys, rows)
            except _NO_DEVICE_IO:
                if rows.device.type != "cuda":
                    raise
                self._device_io = False
        return self.store.put_batch(keys, rows.cpu())

    def _stored_run(self, tokens: Sequence[int], max_tokens: Optional[int]) -> list[str]:
        """The keys of the longest stored prefix of ``tokens`` (whole blocks covering at
        most ``max_tokens`` tokens), by one lookup."""
        layout = self.layout
        keys = self.keys(tokens)
        if max_tokens is not None:
            if max_tokens < 0:
                raise _invalid("max_tokens must not be negative", max_tokens=max_tokens)
            keys = keys[: -(-max_tokens // layout.block_tokens)]
        return keys[: self.store.lookup_prefix(keys)]

    def _read_groups(self, keys: list[str], device, consume) -> tuple[int, Optional[str]]:
        """Reads ``keys`` in groups of ``read_threads`` batches into a staging tensor on
        ``device``, handing each group's whole leading blocks to ``consume(start, rows)``;
        how many leading blocks were read, and why the run ended early.

        On a GPU with more than one group, two staging tensors take turns and ``consume``
        runs on a side stream, so one group's permute or scatter overlaps the next group's
        read (the store orders its copies after the caller's current stream, not the side
        one); the current stream waits for the side stream before this returns."""
        torch = _torch()
        group = _blocks_per_batch(self.layout) * self.read_threads
        spans = [(start, min(len(keys), start + group)) for start in range(0, len(keys), group)]
        overlap = device.type == "cuda" and len(spans) > 1
        rows = min(len(keys), group)
        stagings = [
            torch.empty((rows, self.layout.block_bytes), dtype=torch.uint8, device=device)
            for _ in range(2 if overlap else 1)
        ]
        # Without overlap, what consume queued on this thread's stream for the group
        # before is finished before the reads overwrite the staging tensor (their copies
        # wait for that stream).
        main = torch.cuda.current_stream(device) if overlap else None
        side = torch.cuda.Stream(device) if overlap else None
        consumed = [None] * len(stagings)
        done, cut = 0, None
        try:
            for turn, (start, end) in enumerate(spans):
                slot = turn % len(stagings)
                if consumed[slot] is not None:
                    # The side stream's work on this staging tensor two groups ago.
                    consumed[slot].synchronize()
                staging = stagings[slot]
                got, cut = self._read_into(keys[start:end], staging[: end - start])
                if got and side is None:
                    consume(start, staging[:got])
                elif got:
                    # Orders consume after anything _read_into queued on the current
                    # stream (the copy up from host memory on the fallback path).
                    side.wait_stream(main)
                    with torch.cuda.stream(side):
                        consume(start, staging[:got])
                        consumed[slot] = side.record_event()
                done += got
                if cut is not None:
                    break
        finally:
            if side is not None:
                main.wait_stream(side)
        return done, cut

    def _read_into(self, keys: list[str], rows) -> tuple[int, Optional[str]]:
        """Reads ``keys`` into ``rows`` straight where the store can write their device's
        memory, else through host memory; how many leading blocks are whole, and why the
        run ended early."""
        torch = _torch()
        device = rows.device
        if self._device_io_on(device):
            try:
                return self._read_rows(keys, rows, device.type == "cuda")
            except _NO_DEVICE_IO:
                if device.type != "cuda":
                    raise
                self._device_io = False
        host = torch.empty(tuple(rows.shape), dtype=torch.uint8)
        done, cut = self._read_rows(keys, host, False)
        rows[:done].copy_(host[:done])
        return done, cut

    def _read_rows(self, keys: list[str], rows, device_io: bool) -> tuple[int, Optional[str]]:
        """Reads ``keys`` into ``rows`` in batches of about 256 MiB, ``read_threads`` at
        once; returns how many leading blocks are whole and why the run ended early.
        ``device_io``: a store's refusal of device memory is raised, not taken as the end
        of the prefix."""
        per_batch = _blocks_per_batch(self.layout)
        spans = [(start, min(len(keys), start + per_batch)) for start in range(0, len(keys), per_batch)]
        if self.read_threads == 1 or len(spans) == 1:
            done = 0
            for start, end in spans:
                got, cut = self._get_rows(keys[start:end], rows[start:end], device_io)
                done += got
                if cut is not None:
                    return done, cut
            return done, None
        if device_io:
            # The readers' threads order their copies after their own current stream (the
            # default one), not the caller's: finish the caller's work on ``rows`` first.
            _torch().cuda.current_stream(rows.device).synchronize()
        done = 0
        with ThreadPoolExecutor(max_workers=self.read_threads) as pool:
            reads = [pool.submit(self._get_rows, keys[a:b], rows[a:b], device_io) for a, b in spans]
            try:
                for read in reads:
                    got, cut = read.result()
                    done += got
                    if cut is not None:
                        return done, cut
            finally:
                # Batches after a cut are not needed; leaving the pool waits for those
                # already running, so none writes ``rows`` after this returns.
                for read in reads:
                    read.cancel()
        return done, None

    def _get_rows(self, keys: list[str], rows, device_io: bool = False) -> tuple[int, Optional[str]]:
        """Reads ``keys`` into ``rows``; returns how many leading blocks are whole and
        why the run ended early. A corrupt block is dropped by the store; the blocks before
        it are read again so that no earlier failure is hidden."""
        block_bytes = self.layout.block_bytes
        while keys:
            try:
                sizes = self.store.get_batch(keys, rows[: len(keys)])
            except CascadeError as e:
                if device_io and isinstance(e, _NO_DEVICE_IO):
                    raise
                index = _failed_index(e, len(keys))
                keys = keys[:index]
                cut = "corrupt" if isinstance(e, CorruptError) else e.kind
                if index == 0:
                    return 0, cut
                got, later = self._get_rows(keys, rows, device_io)
                return got, later or cut
            for index, size in enumerate(sizes):
                if size != block_bytes:
                    return index, "missing" if size is None else "wrong_size"
            return len(keys), None
        return 0, None


def _blocks_per_batch(layout: KVLayout) -> int:
    return max(1, _CHUNK_BYTES // layout.block_bytes)


def _gather(staging, layers, layout: KVLayout, start: int, end: int, batch_index: int, table, device) -> None:
    """Copies blocks ``start..end`` of the sequence into ``staging`` ``[n, L, 2, T, H, D]``
    (the block format), on the KV's device."""
    torch = _torch()
    bt = layout.block_tokens
    count = end - start
    index = None if table is None else torch.as_tensor(table[start:end], device=device)
    for layer, (k, v) in enumerate(layers):
        for which, source in ((0, k), (1, v)):
            if index is None:
                # [heads, tokens, dim] -> [blocks, block_tokens, heads, dim]
                part = source[batch_index, :, start * bt : end * bt, :]
                part = part.reshape(layout.num_kv_heads, count, bt, layout.head_dim).permute(1, 2, 0, 3)
            else:
                part = source.index_select(0, index)
            staging[:, layer, which].copy_(part)


def _scatter(rows, layers, layout: KVLayout, pages: list[int], device) -> None:
    """Copies blocks read as ``rows`` ``[n, block_bytes]`` into the pool pages ``pages``
    of every layer."""
    torch = _torch()
    blocks = rows.view(layout.torch_dtype()).view(
        len(pages), layout.num_layers, 2, layout.block_tokens, layout.num_kv_heads, layout.head_dim
    )
    index = torch.as_tensor(pages, device=device)
    for layer, (k, v) in enumerate(layers):
        k.index_copy_(0, index, blocks[:, layer, 0])
        v.index_copy_(0, index, blocks[:, layer, 1])


def _permute_into(tokens_first, rows, start: int, layout: KVLayout) -> None:
    """Copies blocks ``start ..`` read as ``rows`` ``[n, block_bytes]`` into
    ``tokens_first`` ``[L, 2, heads, tokens, dim]``, one copy for every layer."""
    n, bt = len(rows), layout.block_tokens
    blocks = rows.view(layout.torch_dtype()).view(
        n, layout.num_layers, 2, bt, layout.num_kv_heads, layout.head_dim
    )
    target = tokens_first[:, :, :, start * bt : (start + n) * bt].view(
        layout.num_layers, 2, layout.num_kv_heads, n, bt, layout.head_dim
    )
    # [blocks, L, 2, block_tokens, heads, dim] -> [L, 2, heads, blocks, block_tokens, dim]
    target.copy_(blocks.permute(1, 2, 4, 0, 3, 5))


# ---------------------------------------------------------------------- helpers


def cache_pairs(cache: Any) -> list:
    """``(key, value)`` per layer of a transformers cache: ``cache.layers[i].keys /
    .values`` (5.x and late 4.x), ``key_cache / value_cache`` (earlier 4.x), or a
    sequence of pairs (the legacy tuple format)."""
    if hasattr(cache, "layers") and cache.layers and hasattr(cache.layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    try:
        return [(pair[0], pair[1]) for pair in cache]
    except (TypeError, IndexError, KeyError):
        raise _invalid("kv must be a transformers cache or a sequence of (key, value) per layer") from None


def dynamic_cache(pairs: Sequence, config: Any = None):
    """A transformers ``DynamicCache`` holding ``pairs`` (``[batch, kv_heads, tokens,
    head_dim]`` each), on 5.x and 4.x; ``config`` lets 5.x pick each layer's kind."""
    from transformers import DynamicCache

    cache = None
    if config is not None:
        try:
            cache = DynamicCache(config=config)
        except TypeError:  # 4.x takes no config
            cache = None
    if cache is None:
        cache = DynamicCache()
    for index, (k, v) in enumerate(pairs):
        cache.update(k, v, index)
    return cache


def _token_list(tokens: Any) -> list[int]:
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    if tokens and isinstance(tokens[0], list):
        if len(tokens) != 1:
            raise _invalid("tokens must be one sequence (a batch of one)")
        tokens = tokens[0]
    return list(tokens)


def _failed_index(error: CascadeError, count: int) -> int:
    try:
        index = int(getattr(error, "context", {}).get("index", ""))
    except ValueError:
        raise error from None
    if not 0 <= index < count:
        raise error
    return index


def _layers_of(kv: Any, layout: KVLayout) -> list[tuple[Any, Any]]:
    """``(key, value)`` per layer of a transformers cache (5.x ``layers``, 4.x
    ``key_cache``) or of a sequence of pairs."""
    layers = cache_pairs(kv)
    if len(layers) != layout.num_layers:
        raise _invalid(f"kv has {len(layers)} layers, the layout {layout.num_layers}", layers=len(layers))
    return layers


def _check_contiguous(layers, layout: KVLayout, tokens: int, batch_index: int) -> None:
    torch = _torch()
    want_dtype = layout.torch_dtype()
    for index, (k, v) in enumerate(layers):
        for name, tensor in (("key", k), ("value", v)):
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
                raise _invalid(f"layer {index} {name} must be a 4-d tensor [batch, kv_heads, tokens, head_dim]", layer=index)
            batch, heads, length, dim = tensor.shape
            if heads != layout.num_kv_heads or dim != layout.head_dim:
                raise _invalid(
                    f"layer {index} {name} has shape {tuple(tensor.shape)}; the layout wants "
                    f"[batch, {layout.num_kv_heads}, tokens, {layout.head_dim}]",
                    layer=index,
                )
            if length < tokens:
                raise _invalid(f"layer {index} {name} holds {length} tokens, the blocks need {tokens}", layer=index)
            if not 0 <= batch_index < batch:
                raise _invalid(f"batch_index {batch_index} is outside the batch of {batch}")
            if tensor.dtype != want_dtype:
                raise _invalid(f"layer {index} {name} is {tensor.dtype}, the layout {layout.dtype}", layer=index)


def _pools_of(kv: Any, layout: KVLayout) -> list[tuple[Any, Any]]:
    """``(k_pool, v_pool)`` per layer, each ``[num_blocks, block_tokens, kv_heads,
    head_dim]`` (views of the stacked tensor for a stacked layout)."""
    torch = _torch()
    try:
        items = list(kv)
    except TypeError:
        raise _invalid("kv must be a sequence of per-layer pools") from None
    if len(items) != layout.num_layers:
        raise _invalid(f"kv has {len(items)} layers, the layout {layout.num_layers}", layers=len(items))
    page = (layout.block_tokens, layout.num_kv_heads, layout.head_dim)
    pools = []
    for index, item in enumerate(items):
        if layout.kv_stacked:
            if not isinstance(item, torch.Tensor) or item.dim() != 5 or item.shape[layout.stack_dim] != 2:
                raise _invalid(f"layer {index}: a stacked pool must be a 5-d tensor with 2 along dim {layout.stack_dim}", layer=index)
            pair = (item[0], item[1]) if layout.stack_dim == 0 else (item[:, 0], item[:, 1])
        else:
            try:
                pair = (item[0], item[1])
            except (TypeError, IndexError):
                raise _invalid(f"layer {index}: expected a (k_pool, v_pool) pair", layer=index) from None
        for name, pool in zip(("k", "v"), pair):
            if not isinstance(pool, torch.Tensor) or pool.dim() != 4 or tuple(pool.shape[1:]) != page:
                shape = tuple(pool.shape) if isinstance(pool, torch.Tensor) else type(pool).__name__
                raise _invalid(
                    f"layer {index} {name} pool has shape {shape}; the layout wants [num_blocks, {page[0]}, {page[1]}, {page[2]}]",
                    layer=index,
                )
            if pool.dtype != layout.torch_dtype():
                raise _invalid(f"layer {index} {name} pool is {pool.dtype}, the layout {layout.dtype}", layer=index)
        pools.append(pair)
    return pools


def _pool_blocks(pools, layout: KVLayout) -> int:
    return min(int(k.shape[0]) for k, _ in pools)


def _block_table(table: Optional[Sequence[int]], needed: int, pool_blocks: int, what: str) -> list[int]:
    if table is None:
        raise _invalid(f"a paged layout needs a {what}: the pool block of each of the sequence's blocks")
    entries = table.tolist() if hasattr(table, "tolist") else list(table)
    if len(entries) < needed:
        raise _invalid(f"{what} has {len(entries)} entries, the prompt has {needed} full blocks", entries=len(entries))
    entries = [int(e) for e in entries[:needed]]
    for position, entry in enumerate(entries):
        if not 0 <= entry < pool_blocks:
            raise _invalid(f"{what}[{position}] = {entry} is outside the pool of {pool_blocks} blocks", index=position)
    if len(set(entries)) != len(entries):
        raise _invalid(f"{what} names one pool block twice")
    return entries
