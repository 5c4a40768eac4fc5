"""Typing stubs of `cascade.kv`: a model's KV saved and restored by token prefix."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import CascadeStore

__all__ = ["KVLayout", "KVCache", "SaveResult", "Restored", "CONTIGUOUS", "PAGED", "cache_pairs", "dynamic_cache"]

CONTIGUOUS: str
PAGED: str

# A token sequence: a list of ints, a 1-d tensor or array, or a [1, n] tensor.
_Tokens = Union[Sequence[int], Any]

@dataclass(frozen=True)
class KVLayout:
    """How an engine holds KV and how big one Cascade block is (all layers' K and V of
    `block_tokens` tokens, stored as [layer][K, V][block_tokens, kv_heads, head_dim])."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_tokens: int
    dtype: str = "bfloat16"
    kind: str = "contiguous"
    kv_stacked: bool = False
    stack_dim: int = 0
    @classmethod
    def contiguous(
        cls, num_layers: int, num_kv_heads: int, head_dim: int, block_tokens: int, dtype: Any = "bfloat16"
    ) -> KVLayout:
        """Per-layer [batch, kv_heads, tokens, head_dim] tensors (transformers)."""
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
    ) -> KVLayout:
        """Per-layer pools [num_blocks, block_tokens, kv_heads, head_dim]: a (k_pool,
        v_pool) pair per layer, or one tensor with K and V stacked along `stack_dim`."""
    @classmethod
    def from_config(
        cls, config: Any, block_tokens: int, dtype: Any = None, kind: str = "contiguous", **paged: Any
    ) -> KVLayout:
        """The layout of a transformers model config."""
    @property
    def element_size(self) -> int: ...
    @property
    def page_bytes(self) -> int:
        """Bytes of one layer's K (or V) for one block."""
    @property
    def block_bytes(self) -> int:
        """Bytes of one Cascade block."""
    def describe(self) -> str:
        """The layout as the key namespace records it."""
    def torch_dtype(self) -> Any: ...

@dataclass(frozen=True)
class SaveResult:
    blocks: int
    """Full blocks of the prompt."""
    stored: int
    """Blocks written by the call."""
    skipped: int
    """Leading blocks found stored already (not copied)."""
    bytes_stored: int

@dataclass
class Restored:
    tokens: int
    """Leading tokens covered by the restored KV."""
    blocks: int
    """Blocks read."""
    cache: Any = None
    """A transformers DynamicCache (restore), or None (restore_into, or nothing found)."""
    cut: Optional[str] = None
    """Why the prefix ended before the stored chain did ("missing", "corrupt"), or None."""

class KVCache:
    """Saves and restores one model's KV in a CascadeStore under token-prefix keys.

    GPU KV goes to and from the store as CUDA tensors (gathered on the GPU, copied by the
    store device to device or by DMA into a host tier's memory), never staged in host
    memory here; `read_threads` batches of about 256 MiB are read at once."""

    store: CascadeStore
    layout: KVLayout
    model: str
    namespace: bytes
    read_threads: int
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
    ) -> None: ...
    def keys(self, tokens: _Tokens) -> list[str]:
        """The prefix key of each full block of `tokens`."""
    def lookup(self, tokens: _Tokens) -> int:
        """How many leading tokens have their KV stored (whole blocks)."""
    def save(
        self,
        tokens: _Tokens,
        kv: Any,
        *,
        block_table: Optional[Sequence[int]] = None,
        batch_index: int = 0,
    ) -> SaveResult:
        """Stores every full block of `tokens` not stored yet, from a transformers cache
        or (key, value) pairs (contiguous) or per-layer pools and a block table (paged),
        on a GPU or the CPU."""
    def restore(
        self,
        tokens: _Tokens,
        *,
        device: Any = None,
        max_tokens: Optional[int] = None,
        config: Any = None,
    ) -> Restored:
        """The longest stored prefix (at most `max_tokens` tokens) as a DynamicCache on
        `device`, read through a staging tensor of `read_threads` batches of about 256 MiB
        there; a missing or corrupt block ends it."""
    def restore_into(
        self,
        tokens: _Tokens,
        kv: Any,
        block_table: Sequence[int],
        *,
        max_tokens: Optional[int] = None,
    ) -> Restored:
        """The longest stored prefix scattered into paged pools at `block_table`, through
        a staging tensor of `read_threads` batches of about 256 MiB on the pool's device."""

def cache_pairs(cache: Any) -> list[tuple[Any, Any]]:
    """(key, value) per layer of a transformers cache (5.x `layers`, 4.x `key_cache`) or of
    a sequence of pairs."""

def dynamic_cache(pairs: Sequence[tuple[Any, Any]], config: Any = None) -> Any:
    """A transformers DynamicCache holding `pairs`, on 5.x and 4.x."""
