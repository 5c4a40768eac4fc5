"""What the engine connectors share: opening the deployment, engine keys as namespaced
block ids, and reads where anything but the right bytes is a miss.

Engines name KV by their own keys (LMCache's ``CacheEngineKey`` strings, SGLang's page
hashes, vLLM's chained block hashes). A :class:`KeySpace` turns each into a Cascade block
id with a BLAKE2b keyed by the namespace (model, dtype, layout, tensor-parallel shard,
tenant or cache salt), so the same engine key under two namespaces gives two unrelated
ids: two models, dtypes or tenants never read each other's blocks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import cascade

logger = logging.getLogger("cascade.integrations")

#: Environment variable naming the Cascade TOML when the engine's config names none.
CONFIG_ENV = "CASCADE_CONFIG"

_Key = Union[bytes, bytearray, memoryview, str, int]


# Stores opened by connectors of this process, by deployment text: an engine that runs
# its scheduler and a worker in one process (vLLM with one GPU) opens an shm pool once,
# since a pool has one writer.
_OPEN: dict[str, list[Any]] = {}
_OPEN_LOCK = threading.Lock()


def open_store(
    config: Union[str, os.PathLike[str], None] = None, *, rank: Union[int, str] = 0
) -> cascade.CascadeStore:
    """Opens the deployment a connector stores into (release it with :func:`close_store`).

    ``config`` is a Cascade TOML file (``$CASCADE_CONFIG`` when None). Each ``{rank}`` in
    its text becomes ``rank``: an shm pool has one writer, so the tensor-parallel workers
    of one engine name one pool each (``path = "/dev/shm/cascade-{rank}.pool"``) while
    their file tiers may share a directory. Connectors of one process asking for the same
    deployment share one store. With neither a path nor the variable the store is
    ``CascadeStore()``'s default (1 GiB of shm).
    """
    path = config if config is not None else os.environ.get(CONFIG_ENV)
    if path is None or str(path) == "":
        text = ""
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().replace("{rank}", str(rank))
        except OSError as e:
            raise cascade.ConfigError(f"cannot read the Cascade config {path!s}: {e}") from e
    with _OPEN_LOCK:
        entry = _OPEN.get(text)
        if entry is not None and not entry[0].closed:
            entry[1] += 1
            return entry[0]
        store = cascade.CascadeStore.from_toml_str(text) if text else cascade.CascadeStore()
        _OPEN[text] = [store, 1]
        return store


def close_store(store: cascade.CascadeStore) -> None:
    """Releases a store from :func:`open_store`; the last release flushes and closes it."""
    with _OPEN_LOCK:
        for text, entry in list(_OPEN.items()):
            if entry[0] is store:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del _OPEN[text]
                break
    if not store.closed:
        try:
            store.flush()
        finally:
            store.close()


def _key_bytes(key: _Key) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, int):
        if key < 0:
            # Python's hash() of a tuple is signed; keep every bit of it.
            key &= (1 << 64) - 1
        return key.to_bytes(max(8, (key.bit_length() + 7) // 8), "little")
    return bytes(key)


class KeySpace:
    """Engine keys -> Cascade block ids inside one namespace.

    The namespace is :func:`cascade.prefix_namespace` of the arguments, with the engine's
    name in the layout, so ids never collide across engines either.
    """

    __slots__ = ("_key", "namespace")

    def __init__(
        self,
        engine: str,
        model: str,
        dtype: str = "",
        layout: str = "",
        tp_rank: int = 0,
        tp_size: int = 1,
        salt: Union[bytes, str, None] = None,
    ) -> None:
        self.namespace: bytes = cascade.prefix_namespace(
            model, dtype, f"{engine}/{layout}", tp_rank, tp_size, salt
        )
        # A BLAKE2b key is at most 64 bytes: key the hash with a digest of the namespace.
        self._key = hashlib.blake2b(self.namespace, digest_size=32).digest()

    def block_id(self, key: _Key) -> str:
        """The block id of one engine key (32 hex characters)."""
        return hashlib.blake2b(_key_bytes(key), digest_size=16, key=self._key).hexdigest()

    def block_ids(self, keys: Iterable[_Key]) -> list[str]:
        """:meth:`block_id` of each key."""
        key = self._key
        return [
            hashlib.blake2b(_key_bytes(k), digest_size=16, key=key).hexdigest() for k in keys
        ]


def load_blocks(
    store: cascade.CascadeStore,
    ids: Sequence[str],
    outs: Any,
    sizes: Optional[Sequence[int]] = None,
) -> list[bool]:
    """Reads ``ids`` into ``outs`` (a list of outputs, or one tensor or array whose rows
    are the outputs) in one batch; per block, whether it is a hit.

    A hit is a block that is stored and exactly ``sizes[i]`` bytes long (default: the
    size of ``outs[i]``). Anything else is a miss: absent, another size (another layout
    under the same id), failing its checksum (``CorruptError``: the block is removed, so
    the engine recomputes and stores it again), or any other read error. A miss may
    leave bytes in its output; callers only use the outputs of hits.
    """
    if not ids:
        return []
    # A list of outputs, or one tensor or array whose rows are the outputs.
    batch = list(outs) if isinstance(outs, (list, tuple)) else outs
    try:
        got = store.get_batch(list(ids), batch)
    except cascade.CascadeError as e:
        got = _reread(store, ids, outs, e)
    return _hits(got, outs, sizes)


def start_loads(store: cascade.CascadeStore, ids: Sequence[str], outs: Sequence[Any]) -> Any:
    """Starts :func:`load_blocks` in the background (``store.get_batch_async``); hand the
    handle to :func:`finish_loads`. ``outs`` must not be touched until then."""
    return store.get_batch_async(list(ids), list(outs))


def finish_loads(
    handle: Any,
    store: cascade.CascadeStore,
    ids: Sequence[str],
    outs: Sequence[Any],
    sizes: Optional[Sequence[int]] = None,
) -> list[bool]:
    """Waits for a read from :func:`start_loads`; per block, whether it is a hit (as
    :func:`load_blocks`)."""
    try:
        got = handle.result()
    except cascade.CascadeError as e:
        got = _reread(store, ids, outs, e)
    return _hits(got, outs, sizes)


def _reread(
    store: cascade.CascadeStore, ids: Sequence[str], outs: Any, error: Exception
) -> list[Optional[int]]:
    # A batch raises its first failure after reading every other block; read one by one
    # to learn which blocks failed.
    logger.warning("Cascade batch read failed (%s); reading block by block", error)
    return [_load_one(store, i, o) for i, o in zip(ids, outs)]


def _hits(got: Sequence[Optional[int]], outs: Any, sizes: Optional[Sequence[int]]) -> list[bool]:
    if sizes is None:
        sizes = [_nbytes(o) for o in outs]
    return [g is not None and g == s for g, s in zip(got, sizes)]


def _load_one(store: cascade.CascadeStore, block_id: str, out: Any) -> Optional[int]:
    try:
        found, size = store.get(block_id, out)
    except cascade.CorruptError as e:
        logger.warning("Cascade block %s failed its checksum, dropped: %s", block_id, e)
        _remove_quietly(store, block_id)
        return None
    except cascade.CascadeError as e:
        logger.warning("Cascade block %s could not be read: %s", block_id, e)
        return None
    return size if found else None


def _remove_quietly(store: cascade.CascadeStore, block_id: str) -> None:
    try:
        store.remove(block_id)
    except cascade.CascadeError as e:
        logger.warning("Cascade block %s could not be removed: %s", block_id, e)


def _nbytes(out: Any) -> int:
    nbytes = getattr(out, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(out, "element_size") and hasattr(out, "numel"):  # torch tensors
        return int(out.element_size() * out.numel())
    return memoryview(out).nbytes


def save_blocks(store: cascade.CascadeStore, ids: Sequence[str], blocks: Any) -> bool:
    """Stores ``blocks`` (a list, or one tensor or array whose rows are the blocks) under
    ``ids`` in one batch; False (logged) when some block could
    not be stored: a KV cache that is full is not an engine error, the engine recomputes
    what it cannot load."""
    if not ids:
        return True
    try:
        store.put_batch(list(ids), list(blocks) if isinstance(blocks, (list, tuple)) else blocks)
    except cascade.CascadeError as e:
        logger.warning("Cascade could not store %d blocks: %s", len(ids), e)
        return False
    return True


def leading_hits(store: cascade.CascadeStore, ids: Sequence[str]) -> int:
    """How many of ``ids``, from the first, are stored (the engine's prefix hit)."""
    if not ids:
        return 0
    return store.lookup_prefix(list(ids))
